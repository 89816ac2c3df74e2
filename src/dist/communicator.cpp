// Argument checks shared by the MPI and NCCL communicators.
#include "dist/communicator.h"

#include <ATen/ops/full.h>

#include "core/error.h"
#include "core/tensor_text.h"

namespace eaglet {

void check_all_to_all_args(const Communicator& c, const at::Tensor& in, const at::Tensor& out) {
  EAGLET_CHECK(in.is_contiguous() && out.is_contiguous(),
               "{} all_to_all: tensors must be contiguous", c.backend());
  EAGLET_CHECK(in.sizes() == out.sizes() && in.scalar_type() == out.scalar_type(),
               "{} all_to_all: in {} and out {} differ", c.backend(), tensor_text(in),
               tensor_text(out));
  EAGLET_CHECK(in.dim() >= 1 && in.size(0) % c.size() == 0,
               "{} all_to_all: dim 0 of {} is not divisible by the group size {}", c.backend(),
               tensor_text(in), c.size());
}

void check_peer(const Communicator& c, const char* op, int64_t peer) {
  EAGLET_CHECK(peer >= 0 && peer < c.size(), "{} {}: peer {} outside group of {}", c.backend(), op,
               peer, c.size());
}

}  // namespace eaglet

namespace eaglet {

double all_reduce_scalar(Communicator& c, double value, ReduceOp op) {
  auto t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  c.all_reduce(t, op);
  return t.item<double>();
}

}  // namespace eaglet
