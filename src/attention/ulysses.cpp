// The two all-to-all layouts and their autograd wrappers.
#include "attention/ulysses.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>

#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/communicator.h"

namespace eaglet::attention {
namespace {

// [C, n, d] -> [C·U, n/U, d]
at::Tensor scatter_raw(const at::Tensor& x, Communicator& comm) {
  const int64_t U = comm.size(), C = x.size(0), n = x.size(1), d = x.size(2);
  EAGLET_CHECK(n % U == 0, "ulysses scatter: {} heads of {} do not split over {} ranks", n,
               tensor_text(x), U);
  // chunk j (heads of rank j) first: [U, C, n/U, d]
  auto send = x.reshape({C, U, n / U, d}).permute({1, 0, 2, 3}).contiguous();
  auto recv = at::empty_like(send);
  comm.all_to_all(send, recv);  // chunk i of recv: rank i's rows, my heads
  return recv.view({U * C, n / U, d});
}

// [C·U, n/U, d] -> [C, n, d]
at::Tensor gather_raw(const at::Tensor& x, Communicator& comm) {
  const int64_t U = comm.size(), L = x.size(0), h = x.size(1), d = x.size(2);
  EAGLET_CHECK(L % U == 0, "ulysses gather: {} rows of {} do not split over {} ranks", L,
               tensor_text(x), U);
  auto send = x.contiguous().view({U, L / U, h, d});  // chunk j: rows of rank j
  auto recv = at::empty_like(send);
  comm.all_to_all(send, recv);  // chunk i of recv: my rows, rank i's heads
  return recv.permute({1, 0, 2, 3}).reshape({L / U, U * h, d});
}

// The q, k and v parts of a q|k|v tensor split over U ranks: in the full layout [C, nq + 2·nkv, d]
// part p is heads [first, first + U·width), of which rank j holds [first + j·width, +width); in a
// rank's chunk [.., g, d] (g = (nq + 2·nkv)/U) it sits at heads [slot, slot + width).
struct QkvPart {
  int64_t first, width, slot;
};
std::array<QkvPart, 3> qkv_parts(int64_t hq, int64_t hk, int64_t U) {
  return {{{0, hq, 0}, {U * hq, hk, hq}, {U * (hq + hk), hk, hq + hk}}};
}

// full [C, U·g, d] <-> chunks [U, C, g, d] (chunk j: rank j's heads), one strided copy per part.
void full_to_chunks(const at::Tensor& full, const at::Tensor& chunks, int64_t hq, int64_t hk) {
  const int64_t U = chunks.size(0), C = full.size(0), d = full.size(2);
  for (const auto& p : qkv_parts(hq, hk, U))
    chunks.narrow(2, p.slot, p.width)
        .copy_(full.narrow(1, p.first, p.width * U).view({C, U, p.width, d}).permute({1, 0, 2, 3}));
}
void chunks_to_full(const at::Tensor& chunks, const at::Tensor& full, int64_t hq, int64_t hk) {
  const int64_t U = chunks.size(0), C = full.size(0), d = full.size(2);
  for (const auto& p : qkv_parts(hq, hk, U))
    full.narrow(1, p.first, p.width * U)
        .view({C, U, p.width, d})
        .copy_(chunks.narrow(2, p.slot, p.width).permute({1, 0, 2, 3}));
}

Qkv scatter_qkv_raw(const at::Tensor& x, int64_t nq, int64_t nkv, int64_t d, Communicator& comm) {
  const int64_t U = comm.size(), C = x.size(0);
  EAGLET_CHECK(x.dim() == 2 && x.size(1) == (nq + 2 * nkv) * d && nq % U == 0 && nkv % U == 0,
               "ulysses scatter: q|k|v {} of {} + 2 x {} heads of {} do not split over {} ranks",
               tensor_text(x), nq, nkv, d, U);
  const int64_t hq = nq / U, hk = nkv / U;
  auto send = at::empty({U, C, hq + 2 * hk, d}, x.options());
  full_to_chunks(x.view({C, nq + 2 * nkv, d}), send, hq, hk);
  auto recv = at::empty_like(send);
  comm.all_to_all(send, recv);  // chunk i of recv: rank i's rows, my heads
  auto all = recv.view({U * C, hq + 2 * hk, d});
  // v goes to the K/V cache: its own copy, so the cache does not keep q's part alive.
  return {all.narrow(1, 0, hq), all.narrow(1, hq, hk), all.narrow(1, hq + hk, hk).contiguous()};
}

struct Comm : torch::CustomClassHolder {
  Communicator* comm = nullptr;
};

struct Scatter : torch::autograd::Function<Scatter> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Comm> c) {
    ctx->saved_data["comm"] = c10::IValue::make_capsule(c);
    return scatter_raw(x, *c->comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto c = c10::static_intrusive_pointer_cast<Comm>(ctx->saved_data["comm"].toCapsule());
    return {gather_raw(g[0], *c->comm), at::Tensor()};
  }
};

struct Gather : torch::autograd::Function<Gather> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Comm> c) {
    ctx->saved_data["comm"] = c10::IValue::make_capsule(c);
    return gather_raw(x, *c->comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto c = c10::static_intrusive_pointer_cast<Comm>(ctx->saved_data["comm"].toCapsule());
    return {scatter_raw(g[0], *c->comm), at::Tensor()};
  }
};

struct ScatterQkv : torch::autograd::Function<ScatterQkv> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, int64_t nq, int64_t nkv,
                                                int64_t d, c10::intrusive_ptr<Comm> c) {
    ctx->saved_data["comm"] = c10::IValue::make_capsule(c);
    auto r = scatter_qkv_raw(x, nq, nkv, d, *c->comm);
    return {r.q, r.k, r.v};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto c = c10::static_intrusive_pointer_cast<Comm>(ctx->saved_data["comm"].toCapsule());
    return {gather_qkv(g[0], g[1], g[2], *c->comm), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

c10::intrusive_ptr<Comm> wrap(Communicator& comm) {
  auto c = c10::make_intrusive<Comm>();
  c->comm = &comm;
  return c;
}

}  // namespace

at::Tensor scatter_heads(const at::Tensor& x, Communicator& ulysses) {
  if (ulysses.size() == 1) return x;
  return Scatter::apply(x, wrap(ulysses));
}

at::Tensor gather_heads(const at::Tensor& x, Communicator& ulysses) {
  if (ulysses.size() == 1) return x;
  return Gather::apply(x, wrap(ulysses));
}

Qkv scatter_qkv(const at::Tensor& x, int64_t nq, int64_t nkv, int64_t d, Communicator* ulysses) {
  if (ulysses == nullptr || ulysses->size() == 1) {
    auto parts = x.split_with_sizes({nq * d, nkv * d, nkv * d}, -1);
    const int64_t C = x.size(0);
    return {parts[0].view({C, nq, d}), parts[1].view({C, nkv, d}),
            parts[2].contiguous().view({C, nkv, d})};
  }
  auto out = ScatterQkv::apply(x, nq, nkv, d, wrap(*ulysses));
  return {out[0], out[1], out[2]};
}

at::Tensor gather_qkv(const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv,
                      Communicator& ulysses) {
  const int64_t U = ulysses.size(), L = dq.size(0), hq = dq.size(1), hk = dk.size(1),
                d = dq.size(2), C = L / U, g = hq + 2 * hk;
  EAGLET_CHECK(U > 1 && L % U == 0 && dk.size(0) == L && dv.sizes() == dk.sizes(),
               "ulysses gather: dq {}, dk {}, dv {} over {} ranks", tensor_text(dq),
               tensor_text(dk), tensor_text(dv), U);
  auto send = at::empty({U, C, g, d}, dq.options());  // chunk j: rank j's rows, my heads
  auto rows = send.view({L, g, d});
  rows.narrow(1, 0, hq).copy_(dq);
  rows.narrow(1, hq, hk).copy_(dk);
  rows.narrow(1, hq + hk, hk).copy_(dv);
  auto recv = at::empty_like(send);
  ulysses.all_to_all(send, recv);  // chunk i of recv: my rows, rank i's heads
  auto dx = at::empty({C, U * g, d}, dq.options());
  chunks_to_full(recv, dx, hq, hk);
  return dx.view({C, U * g * d});
}

}  // namespace eaglet::attention
