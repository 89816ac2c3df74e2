// Ring block 0: forward with overlapped KV rotation and fp32 LSE merge; backward with dK/dV
// rotation.
#include "attention/ring.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/logaddexp.h>
#include <ATen/ops/zeros.h>

#include "dist/communicator.h"

namespace eaglet::attention {
namespace {

// K and V travel as one buffer: [2, B, Hkv, L, d].
at::Tensor pack(const at::Tensor& k, const at::Tensor& v) {
  auto kc = k.contiguous(), vc = v.contiguous();
  return at::cat({kc.unsqueeze(0), vc.unsqueeze(0)}, 0);
}

class RingBlock0 final : public Block0 {
 public:
  RingBlock0(Communicator& ring, const LocalKernel& kernel) : ring_(ring), kernel_(kernel) {}

  AttnResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     double scale) override {
    const int64_t R = ring_.size(), g = ring_.rank(), next = (g + 1) % R, prev = (g + R - 1) % R;
    auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    auto out = at::zeros(q.sizes(), q.options().dtype(acc_type));
    auto lse = at::full({q.size(0), q.size(1), q.size(2)}, -INFINITY, q.options().dtype(acc_type));
    AttnResult result;
    auto kv = pack(k, v);
    for (int64_t t = 0; t < R; ++t) {
      at::Tensor incoming;
      std::unique_ptr<Work> transfer;
      if (t + 1 < R) {  // start the next block's transfer before computing on this one
        incoming = at::empty_like(kv);
        transfer = ring_.send_recv(kv, next, incoming, prev);
      }
      KernelState state;
      if (t <= g) {
        auto r = attend(kernel_, q, kv[0], kv[1], /*causal=*/t == 0, scale);
        auto block_lse = r.lse.to(acc_type);
        auto merged = at::logaddexp(lse, block_lse);
        out = out * at::exp(lse - merged).unsqueeze(-1) +
              r.out.to(acc_type) * at::exp(block_lse - merged).unsqueeze(-1);
        lse = merged;
        state = std::move(r.state);
      }
      result.state.parts.push_back(std::move(state));
      if (transfer) {
        transfer->wait();
        kv = incoming;
      }
    }
    result.out = out.to(q.scalar_type());
    result.lse = lse;
    return result;
  }

  std::vector<at::Tensor> backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, const at::Tensor& out,
                                   const at::Tensor& lse, const KernelState& state,
                                   double scale) override {
    const int64_t R = ring_.size(), g = ring_.rank(), next = (g + 1) % R, prev = (g + R - 1) % R;
    auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    auto dq = at::zeros(q.sizes(), q.options().dtype(acc_type));
    auto kv = pack(k, v);
    auto dkv =
        at::zeros(kv.sizes(), kv.options().dtype(acc_type));  // gradient of the block held now
    for (int64_t t = 0; t < R; ++t) {
      at::Tensor incoming;
      std::unique_ptr<Work> transfer;
      if (t + 1 < R) {
        incoming = at::empty_like(kv);
        transfer = ring_.send_recv(kv, next, incoming, prev);
      }
      if (t <= g) {
        auto grads = attend_backward(kernel_, dout, q, kv[0], kv[1], out, lse, state.parts[t],
                                     /*causal=*/t == 0, scale);
        dq = dq + grads[0].to(acc_type);
        dkv[0] += grads[1].to(acc_type);
        dkv[1] += grads[2].to(acc_type);
      }
      // The block's gradient travels with the block; after R hops it is back with its owner.
      auto dkv_in = at::empty_like(dkv);
      ring_.send_recv(dkv, next, dkv_in, prev)->wait();
      dkv = dkv_in;
      if (transfer) {
        transfer->wait();
        kv = incoming;
      }
    }
    return {dq.to(q.scalar_type()), dkv[0].to(k.scalar_type()), dkv[1].to(v.scalar_type())};
  }

 private:
  Communicator& ring_;
  const LocalKernel& kernel_;
};

}  // namespace

std::shared_ptr<Block0> ring_block0(Communicator& ring, const LocalKernel& kernel) {
  if (ring.size() == 1) return local_block0(kernel);
  return std::make_shared<RingBlock0>(ring, kernel);
}

}  // namespace eaglet::attention
