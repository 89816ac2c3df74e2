// Attention of one TTT step (DESIGN §4-5): query i of step k sees the step-0 keys j <= i (block 0,
// causal over the global sequence) and the keys of steps 1..k at its own position (the diagonal
// blocks). Block 0 comes from a provider (a local kernel, or the ring under USP); the diagonal
// blocks are local; all are merged by log-sum-exp in fp32. Backward is exact: block 0's backward
// receives the merged out and lse, the diagonal blocks have closed-form gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "attention/local_attention.h"
#include "core/kernels.h"

namespace eaglet::attention {

// Block 0 over [1, H, S, d] tensors in the kernels' layout; causal over the global sequence.
class Block0 {
 public:
  virtual ~Block0() = default;
  virtual AttnResult forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             double scale) = 0;
  virtual std::vector<at::Tensor> backward(const at::Tensor& dout, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v,
                                           const at::Tensor& out, const at::Tensor& lse,
                                           const KernelState& state, double scale) = 0;
  // One rank's whole (or Ulysses-gathered) sequence: what segmented_block0 may split.
  virtual bool local() const { return false; }
};

// Block 0 on one rank: the whole (or Ulysses-gathered) sequence, causal, through a local kernel.
std::shared_ptr<Block0> local_block0(const LocalKernel& kernel);

// Block 0 of a packed sample: `inner` (a local block 0) run on each document alone, the documents
// `segments` (lengths along the sequence, summing to it), so no query sees another document's keys.
std::shared_ptr<Block0> segmented_block0(std::shared_ptr<Block0> inner,
                                         std::vector<int64_t> segments);

// q [S, H, d] of step k = ks.size() - 1; ks[m], vs[m] [S, Hkv, d]: the cache block of step m
// (K post-RoPE). Returns [S, H, d] in q's dtype. Differentiable in q and every block. `diag`: the
// diagonal blocks' kernel (Kernels::ttt_diag, attention/ttt_diag.h).
at::Tensor ttt_attention(const at::Tensor& q, const std::vector<at::Tensor>& ks,
                         const std::vector<at::Tensor>& vs, std::shared_ptr<Block0> block0,
                         double scale, Impl diag = Impl::reference);

}  // namespace eaglet::attention
