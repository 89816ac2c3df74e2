// The per-op harness of tests/torch/test_ops.cpp, in the manner of ggml's test-backend-ops: a case
// builds its inputs, runs the op under test through its real entry point with a run's kernel
// table (core/kernels.h), and carries a plain reference (ATen ops in fp64) and its declared
// tolerances. Two checks run every case of the table:
//   check_fp64  CPU fp64: forward vs the reference; the op's gradients (autograd through the op,
//               random upstream gradients) vs the reference's autograd and vs central finite
//               differences of the op's own forward on a sample of input entries.
//   check_low   a low-precision run (bf16) on a device with one or more kernel tables: forward
//               and gradients vs the fp64 reference on the same rounded values.
// Every comparison prints its max-normalised, row-normalised and NMSE error (core/tensor_compare.h)
// and checks max-normalised against the case's declared tolerance.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "catch.h"
#include "core/kernels.h"
#include "core/tensor_compare.h"
#include "dist/communicator.h"
#include "torch/thread_group.h"

namespace eaglet::test::ops {

using Tensors = std::vector<at::Tensor>;

// How an input is cast for a run. compute: the run's dtype (fp64, bf16); wide: fp64 in an fp64 run,
// else fp32 (masks, loss weights); f32: always fp32 (RoPE tables, the fp32 masters to_compute
// casts); fixed: as made (ids, bool flags), moved to the run's device only.
enum class Role { compute, wide, f32, fixed };

struct Input {
  std::string name;
  at::Tensor value;  // as made, on the CPU: fp64 for the floating roles
  Role role = Role::compute;
  bool grad = true;  // differentiated: its gradient is checked
};
using Inputs = std::vector<Input>;  // one rank's

struct Output {
  // grad: differentiable, gets an upstream gradient; value: not differentiable, forward checked;
  // discrete (indices, counts, flags): checked in fp64, printed only in a low-precision run, where
  // a near-tie may legitimately flip under rounding.
  enum Kind { grad, value, discrete };
  std::string name;
  Kind kind = grad;
};

// What an op sees besides its inputs.
struct Run {
  c10::Device device;
  at::ScalarType dtype;  // the compute dtype
  Kernels kernels;
  Communicator& comm;  // the case's group (one member for a single-rank case)
};

struct Tolerance {
  double fp64;      // fp64: forward vs the reference, and the op's gradients vs the reference's
  double fd;        // fp64: the op's gradients vs central finite differences of its forward
  double bf16_fwd;  // bf16: forward vs the fp64 reference on the same rounded inputs
  double bf16_bwd;  // bf16: gradients vs the fp64 reference's autograd, same upstream gradients
};

struct Case {
  std::string name;
  int64_t ranks = 1;  // > 1: each rank on its own thread (torch/thread_group.h)
  std::function<std::vector<Inputs>(at::Generator&)> make;  // one Inputs per rank
  std::vector<Output> outputs;
  std::function<Tensors(const Tensors& in, const Run& run)> op;  // one rank's outputs
  // Every rank's fp64 inputs -> every rank's outputs, in plain ATen ops (autograd differentiates
  // it).
  std::function<std::vector<Tensors>(const std::vector<Tensors>& in)> reference;
  Tolerance tol;
  const char* cpu_only = nullptr;  // why the case does not run on the GPU
  const char* gpu_only = nullptr;  // why it runs on the GPU only
};

// --- input helpers for the case table ------------------------------------------------------------
inline at::Tensor randn(at::Generator& gen, at::IntArrayRef sizes, double scale = 1.0) {
  return at::randn(sizes, gen, at::TensorOptions().dtype(at::kDouble)) * scale;
}
inline Input diff(std::string name, at::Tensor t, Role role = Role::compute) {
  return {std::move(name), std::move(t), role, true};
}
inline Input nodiff(std::string name, at::Tensor t, Role role = Role::compute) {
  return {std::move(name), std::move(t), role, false};
}
inline Input fixed(std::string name, at::Tensor t) {
  return {std::move(name), std::move(t), Role::fixed, false};
}

// --- the harness
// -----------------------------------------------------------------------------------
namespace detail {

inline at::ScalarType wide_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Every rank's inputs cast for a run (plain tensors: the runs make their own leaves).
inline std::vector<Tensors> cast(const std::vector<Inputs>& made, c10::Device device,
                                 at::ScalarType dtype) {
  std::vector<Tensors> out;
  for (const auto& rank : made) {
    Tensors t;
    for (const auto& in : rank) {
      const auto to = in.role == Role::compute ? dtype
                      : in.role == Role::wide  ? wide_type(dtype)
                      : in.role == Role::f32   ? at::kFloat
                                               : in.value.scalar_type();
      t.push_back(in.value.to(device, to).contiguous().clone());
    }
    out.push_back(std::move(t));
  }
  return out;
}

// The values a run's inputs hold, in fp64 on the CPU: what the reference sees.
inline std::vector<Tensors> as_fp64(const std::vector<Tensors>& in) {
  std::vector<Tensors> out;
  for (const auto& rank : in) {
    Tensors t;
    for (const auto& x : rank)
      t.push_back(x.is_floating_point() ? x.to(at::kCPU, at::kDouble) : x.cpu());
    out.push_back(std::move(t));
  }
  return out;
}

struct Result {
  std::vector<Tensors> out;   // [rank][output], detached copies
  std::vector<Tensors> grad;  // [rank][input]; undefined where the input is not differentiated
};

// Leaves of one rank's inputs, requiring grad where the case differentiates them.
inline Tensors leaves(const Tensors& in, int64_t rank, const std::vector<Inputs>& made) {
  Tensors l;
  for (size_t i = 0; i < in.size(); ++i)
    l.push_back(made[rank][i].grad ? in[i].detach().requires_grad_(true) : in[i]);
  return l;
}

// Gradients of Σ <upstream, output> over the differentiable outputs, by autograd.
inline Tensors gradients(const Case& c, const Tensors& outs, const Tensors& upstream,
                         const Tensors& in, const Inputs& made) {
  Tensors o, g, x;
  for (size_t k = 0; k < c.outputs.size(); ++k) {
    if (c.outputs[k].kind != Output::grad) continue;
    o.push_back(outs[k]);
    g.push_back(upstream[k].to(outs[k].options()));
  }
  std::vector<size_t> which;
  for (size_t i = 0; i < in.size(); ++i)
    if (made[i].grad) {
      x.push_back(in[i]);
      which.push_back(i);
    }
  Tensors grads(in.size());
  if (x.empty()) return grads;
  auto got = torch::autograd::grad(o, x, g, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true);
  for (size_t j = 0; j < which.size(); ++j)
    grads[which[j]] = got[j].defined() ? got[j].detach() : at::zeros_like(x[j]);
  return grads;
}

// The op on every rank (threads for a group); with upstream gradients also its backward.
inline Result run_op(const Case& c, const std::vector<Inputs>& made, const std::vector<Tensors>& in,
                     c10::Device device, at::ScalarType dtype, const Kernels& kernels,
                     const std::vector<Tensors>* upstream) {
  Result r;
  r.out.resize(c.ranks);
  r.grad.resize(c.ranks);
  run_ranks(c.ranks, [&](Communicator& comm) {
    const int64_t rank = comm.rank();
    c10::AutoGradMode grad_mode(true);
    auto x = leaves(in[rank], rank, made);
    const Run run{device, dtype, kernels, comm};
    auto outs = c.op(x, run);
    EAGLET_CHECK(outs.size() == c.outputs.size(), "{}: {} outputs for {} declared", c.name,
                 outs.size(), c.outputs.size());
    for (const auto& t : outs) r.out[rank].push_back(t.detach().clone());
    if (upstream != nullptr) r.grad[rank] = gradients(c, outs, (*upstream)[rank], x, made[rank]);
  });
  return r;
}

// The reference on every rank's fp64 inputs at once, with upstream gradients also its autograd.
inline Result run_reference(const Case& c, const std::vector<Inputs>& made,
                            const std::vector<Tensors>& in, const std::vector<Tensors>* upstream) {
  c10::AutoGradMode grad_mode(true);
  std::vector<Tensors> x;
  for (int64_t rank = 0; rank < c.ranks; ++rank) x.push_back(leaves(in[rank], rank, made));
  auto outs = c.reference(x);
  EAGLET_CHECK(static_cast<int64_t>(outs.size()) == c.ranks, "{}: reference of {} ranks", c.name,
               outs.size());
  Result r;
  for (auto& rank : outs) {
    EAGLET_CHECK(rank.size() == c.outputs.size(), "{}: reference gives {} outputs for {}", c.name,
                 rank.size(), c.outputs.size());
    Tensors d;
    for (const auto& t : rank) d.push_back(t.detach().clone());
    r.out.push_back(std::move(d));
  }
  r.grad.resize(c.ranks);
  if (upstream == nullptr) return r;
  // One backward over every rank's outputs (a group's reference couples the ranks).
  Tensors o, g, leaves_all;
  std::vector<std::pair<int64_t, size_t>> where;
  for (int64_t rank = 0; rank < c.ranks; ++rank) {
    for (size_t k = 0; k < c.outputs.size(); ++k)
      if (c.outputs[k].kind == Output::grad) {
        o.push_back(outs[rank][k]);
        g.push_back((*upstream)[rank][k]);
      }
    r.grad[rank].resize(in[rank].size());
    for (size_t i = 0; i < in[rank].size(); ++i)
      if (made[rank][i].grad) {
        leaves_all.push_back(x[rank][i]);
        where.emplace_back(rank, i);
      }
  }
  if (leaves_all.empty()) return r;
  auto got = torch::autograd::grad(o, leaves_all, g, false, false, /*allow_unused=*/true);
  for (size_t j = 0; j < where.size(); ++j)
    r.grad[where[j].first][where[j].second] =
        got[j].defined() ? got[j].detach() : at::zeros_like(leaves_all[j]);
  return r;
}

// Σ over ranks and differentiable outputs of <upstream, output>, in fp64.
inline double functional(const Case& c, const Result& r, const std::vector<Tensors>& upstream) {
  double f = 0;
  for (int64_t rank = 0; rank < c.ranks; ++rank)
    for (size_t k = 0; k < c.outputs.size(); ++k)
      if (c.outputs[k].kind == Output::grad)
        f += (r.out[rank][k].to(at::kCPU, at::kDouble) * upstream[rank][k]).sum().item<double>();
  return f;
}

// A tensor of every rank, stacked along dim 0 (scalars) or concatenated there.
inline at::Tensor all_ranks(const std::vector<Tensors>& t, size_t k) {
  Tensors parts;
  for (const auto& rank : t) parts.push_back(rank[k].to(at::kCPU, at::kDouble));
  if (parts.size() == 1) return parts[0];
  return parts[0].dim() == 0 ? at::stack(parts) : at::cat(parts);
}

// One comparison: printed, and checked against tol unless report_only.
inline void report(const std::string& run, const Case& c, const std::string& what,
                   const TensorError& e, double tol, bool report_only = false) {
  const bool ok = e.max_norm <= tol;
  const std::string line =
      fmt::format("ops {:<16} {:<44} {:<22} {} | tol {:.0e} {}", run, c.name, what, e.text(), tol,
                  report_only ? "(reported only)"
                  : ok        ? "ok"
                              : "FAIL");
  fmt::print("{}\n", line);
  if (report_only) return;
  INFO(line);
  CHECK(ok);
}

// Random upstream gradients for the differentiable outputs (shapes from the reference's outputs),
// rounded to `dtype` (every run then sees the same values; bf16 values are exact in fp32).
inline std::vector<Tensors> upstream_for(const Case& c, const Result& ref, at::Generator& gen,
                                         at::ScalarType dtype) {
  std::vector<Tensors> up(c.ranks);
  for (int64_t rank = 0; rank < c.ranks; ++rank)
    for (size_t k = 0; k < c.outputs.size(); ++k)
      up[rank].push_back(c.outputs[k].kind == Output::grad
                             ? randn(gen, ref.out[rank][k].sizes()).to(dtype).to(at::kDouble)
                             : at::Tensor());
  return up;
}

inline uint64_t seed_of(const std::string& name) {  // FNV-1a: each case its own fixed data
  uint64_t h = 1469598103934665603ull;
  for (char ch : name) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

}  // namespace detail

// Entries of each differentiated input checked by finite differences, spread over the ranks (each
// evaluation of a group runs every rank): on every rank its largest analytic gradient (so the
// sample's scale is the gradient's) plus random others.
inline constexpr int64_t kFdEntries = 8;

inline void check_fp64(const Case& c) {
  using namespace detail;
  auto gen = at::detail::createCPUGenerator(seed_of(c.name));
  const auto made = c.make(gen);
  REQUIRE(static_cast<int64_t>(made.size()) == c.ranks);
  const c10::Device cpu(c10::kCPU);
  const auto kernels = Kernels::all(Impl::reference);
  auto in = cast(made, cpu, at::kDouble);
  const auto ref_in = as_fp64(in);
  const auto up = upstream_for(c, run_reference(c, made, ref_in, nullptr), gen, at::kDouble);
  const auto ref = run_reference(c, made, ref_in, &up);
  const auto got = run_op(c, made, in, cpu, at::kDouble, kernels, &up);
  const std::string run = "cpu fp64";
  for (size_t k = 0; k < c.outputs.size(); ++k)
    report(run, c, "forward " + c.outputs[k].name,
           tensor_error(all_ranks(got.out, k), all_ranks(ref.out, k)), c.tol.fp64);
  const auto& names = made[0];
  for (size_t i = 0; i < names.size(); ++i) {
    if (!names[i].grad) continue;
    report(run, c, "grad " + names[i].name + " vs ref",
           tensor_error(all_ranks(got.grad, i), all_ranks(ref.grad, i)), c.tol.fp64);
    // Central differences of the op's own forward (the same code path: autograd on, leaves).
    std::vector<double> analytic, numeric;
    for (int64_t rank = 0; rank < c.ranks; ++rank) {
      auto x = in[rank][i].view({-1});
      auto g = got.grad[rank][i].to(at::kDouble).reshape({-1});
      const int64_t n = x.numel();
      std::vector<int64_t> entries{at::argmax(at::abs(g)).item<int64_t>()};
      auto perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
      const int64_t want = std::max<int64_t>(2, (kFdEntries + c.ranks - 1) / c.ranks);
      for (int64_t j = 0; j < n && static_cast<int64_t>(entries.size()) < want; ++j)
        if (perm[j].item<int64_t>() != entries[0]) entries.push_back(perm[j].item<int64_t>());
      for (int64_t e : entries) {
        const double orig = x[e].item<double>(), h = 1e-5 * std::max(1.0, std::abs(orig));
        x[e] = orig + h;
        const double xp = x[e].item<double>();  // as stored (an fp32 input rounds the step)
        const double fp =
            functional(c, run_op(c, made, in, cpu, at::kDouble, kernels, nullptr), up);
        x[e] = orig - h;
        const double xm = x[e].item<double>();
        const double fm =
            functional(c, run_op(c, made, in, cpu, at::kDouble, kernels, nullptr), up);
        x[e] = orig;
        numeric.push_back((fp - fm) / (xp - xm));
        analytic.push_back(g[e].item<double>());
      }
    }
    auto t = [](const std::vector<double>& v) {
      return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
    };
    report(run, c, "grad " + names[i].name + " vs FD", tensor_error(t(analytic), t(numeric)),
           c.tol.fd);
  }
}

// The case in `dtype` on `device` under each named kernel table, against the fp64 reference on
// the same (rounded) inputs and upstream gradients.
inline void check_low(const Case& c, c10::Device device, at::ScalarType dtype,
                      const std::vector<std::pair<std::string, Kernels>>& tables) {
  using namespace detail;
  auto gen = at::detail::createCPUGenerator(seed_of(c.name));
  const auto made = c.make(gen);
  REQUIRE(static_cast<int64_t>(made.size()) == c.ranks);
  auto in = cast(made, device, dtype);
  const auto ref_in = as_fp64(in);
  const auto up = upstream_for(c, run_reference(c, made, ref_in, nullptr), gen, dtype);
  const auto ref = run_reference(c, made, ref_in, &up);
  for (const auto& [table, kernels] : tables) {
    const std::string run =
        fmt::format("{} {} {}", device.is_cuda() ? "gpu" : "cpu", c10::toString(dtype), table);
    const auto got = run_op(c, made, in, device, dtype, kernels, &up);
    for (size_t k = 0; k < c.outputs.size(); ++k)
      report(run, c, "forward " + c.outputs[k].name,
             tensor_error(all_ranks(got.out, k), all_ranks(ref.out, k)), c.tol.bf16_fwd,
             c.outputs[k].kind == Output::discrete);
    for (size_t i = 0; i < made[0].size(); ++i)
      if (made[0][i].grad)
        report(run, c, "grad " + made[0][i].name,
               tensor_error(all_ranks(got.grad, i), all_ranks(ref.grad, i)), c.tol.bf16_bwd);
  }
}

}  // namespace eaglet::test::ops
