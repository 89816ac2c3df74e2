// The collective self-check: one table of cases, each {name, run} producing (got, expected).
// Values stay below 256 so bfloat16 holds them exactly and every comparison is exact.
#include "dist/selfcheck.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/remainder.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <functional>

namespace eaglet {
namespace {

struct Case {
  const char* name;
  // Runs the operation on `c` with inputs of `dtype` on `device`; returns {got, expected} on CPU.
  std::function<std::pair<at::Tensor, at::Tensor>(Communicator& c, at::TensorOptions opts)> run;
};

std::string values_text(const at::Tensor& t) {
  auto v = t.to(at::kLong).contiguous();
  const int64_t* p = v.data_ptr<int64_t>();
  return fmt::format("[{}]", fmt::join(p, p + v.numel(), " "));
}

at::Tensor iota(int64_t n) {
  return at::arange(n, at::TensorOptions().dtype(at::kLong));
}

// Integers every value of the dtype holds exactly: bfloat16 only up to 256, so data-movement cases
// take their pattern modulo this bound and reductions fall back to simpler patterns in large
// groups.
int64_t exact_bound(const at::TensorOptions& opts) {
  switch (opts.dtype().toScalarType()) {
    case at::kBFloat16:
      return 256;
    case at::kHalf:
      return 2048;
    case at::kFloat:
      return 1 << 24;
    default:
      return int64_t{1} << 40;
  }
}

const std::vector<Case>& cases() {
  static const std::vector<Case> table = {
      {"all_to_all",
       [](Communicator& c, at::TensorOptions opts) {
         const int64_t n = c.size(), me = c.rank(), k = 3;
         // chunk j of member i holds i*32 + j*4 + e; member me receives chunk me of every i.
         auto j = iota(n).view({n, 1}), e = iota(k).view({1, k});
         const int64_t b = exact_bound(opts);
         auto in = (me * 32 + j * 4 + e).remainder(b).reshape({n * k});
         auto expected = (j * 32 + me * 4 + e).remainder(b).reshape({n * k});
         auto dev_in = in.to(opts.dtype_opt().value()).to(opts.device());
         auto out = at::full({n * k}, -1, opts);
         c.all_to_all(dev_in, out);
         return std::make_pair(out.cpu(), expected);
       }},
      {"send_recv(ring)",
       [](Communicator& c, at::TensorOptions opts) {
         const int64_t n = c.size(), me = c.rank(), k = 5;
         const int64_t next = (me + 1) % n, prev = (me + n - 1) % n;
         const int64_t b = exact_bound(opts);
         auto send =
             (me * 10 + iota(k)).remainder(b).to(opts.dtype_opt().value()).to(opts.device());
         auto recv = at::full({k}, -1, opts);
         c.send_recv(send, next, recv, prev)->wait();
         return std::make_pair(recv.cpu(), (prev * 10 + iota(k)).remainder(b));
       }},
      {"all_reduce(sum)",
       [](Communicator& c, at::TensorOptions opts) {
         const int64_t n = c.size(), me = c.rank(), k = 4;
         // member m adds m + 1 + e; in a group too large for exact sums, 1 + e % 2
         const bool small = n * (n + 1) / 2 + n * k < exact_bound(opts);
         auto mine = small ? me + 1 + iota(k) : 1 + iota(k).remainder(2);
         auto t = mine.to(opts.dtype_opt().value()).to(opts.device());
         c.all_reduce(t, ReduceOp::sum);
         return std::make_pair(
             t.cpu(), small ? n * (n + 1) / 2 + n * iota(k) : n * (1 + iota(k).remainder(2)));
       }},
      {"all_reduce(max)",
       [](Communicator& c, at::TensorOptions opts) {
         const int64_t n = c.size(), me = c.rank(), k = 4;
         const bool small = (n - 1) * k < exact_bound(opts);
         auto mine = small ? me * (iota(k) + 1) : me + 0 * iota(k);
         auto t = mine.to(opts.dtype_opt().value()).to(opts.device());
         c.all_reduce(t, ReduceOp::max);
         return std::make_pair(t.cpu(), small ? (n - 1) * (iota(k) + 1) : (n - 1) + 0 * iota(k));
       }},
      {"broadcast",
       [](Communicator& c, at::TensorOptions opts) {
         const int64_t root = c.size() - 1, k = 6;
         auto t = c.rank() == root ? (5 + iota(k)).to(opts.dtype_opt().value()).to(opts.device())
                                   : at::full({k}, -1, opts);
         c.broadcast(t, root);
         return std::make_pair(t.cpu(), 5 + iota(k));
       }},
  };
  return table;
}

}  // namespace

SelfCheckResult run_selfcheck(const ProcessGroups& groups) {
  SelfCheckResult result;
  for (GroupKind kind : kAllGroupKinds) {
    Communicator& comm = groups.group(kind);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kLong}) {
      auto opts = at::TensorOptions().dtype(dtype).device(groups.device());
      for (const auto& test : cases()) {
        ++result.checks;
        auto [got, expected] = test.run(comm, opts);
        if (!at::equal(got.to(at::kLong), expected))
          result.failures.push_back(
              fmt::format("{} group (members of world rank {}) {} {}: got {} expected {}",
                          group_name(kind), groups.world_rank(), test.name, c10::toString(dtype),
                          values_text(got), values_text(expected)));
      }
      comm.barrier();
      ++result.checks;
    }
  }
  return result;
}

}  // namespace eaglet
