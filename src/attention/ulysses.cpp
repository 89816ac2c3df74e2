// The two all-to-all layouts and their autograd wrappers.
#include "attention/ulysses.h"

#include <ATen/ops/empty_like.h>
#include <torch/csrc/autograd/custom_function.h>

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

}  // namespace eaglet::attention
