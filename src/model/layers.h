// The draft's building blocks as plain functions on tensors (autograd records them): RMSNorm,
// RoPE (none / linear / llama3 scaling) and the SwiGLU MLP. Weights arrive as fp32 masters and
// are cast to the compute dtype here, so gradients flow back to the masters in fp32.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <string>

#include "core/config.h"
#include "core/kernels.h"

namespace torch::autograd {
struct AutogradContext;
}

namespace eaglet::model {

// The gradient of a weight that every TTT step uses, summed over its uses by the GEMMs
// themselves: each use's backward adds its dyᵀ·x onto one buffer (cuBLAS's β = 1: the product is
// added in fp32 and rounded once; no [out × in] product per use, no separate add), and the last of
// `uses` backward calls returns the sum while the earlier ones give the weight no gradient. Exact
// because only the sum over the uses is ever read (a weight's gradient is that sum). A handle:
// copies share the sum, so autograd functions keep it in their saved data.
class WeightGrad {
 public:
  WeightGrad() : WeightGrad(1) {}  // one use: its backward returns its own gradient
  explicit WeightGrad(int64_t uses);
  // sum[:, col : col + x.size(1)] (+)= dyᵀ·x for a weight [dy.size(1), cols] (dy [rows, out],
  // x [rows, in]); the first use writes its columns, later uses add.
  void add(const at::Tensor& dy, const at::Tensor& x, int64_t cols, int64_t col = 0);
  // One use's backward is done: after the last use the sum (let go here), else undefined.
  at::Tensor finish();
  // Kept in an autograd function's saved data under `key`, and taken back (sharing the sum).
  void save(torch::autograd::AutogradContext* ctx, const std::string& key) const;
  static WeightGrad load(torch::autograd::AutogradContext* ctx, const std::string& key);

 private:
  WeightGrad(c10::List<at::Tensor> sum, c10::List<int64_t> count);
  c10::List<at::Tensor> sum_;  // one element (undefined until the first add of a backward pass)
  c10::List<int64_t> count_;   // {uses, uses finished}
};

// w cast to the compute dtype dt, as one autograd function whose backward casts the gradient back
// to w's dtype (the fp32 masters). `widen` (Kernels::widen): reference = ATen's cast; fused = one
// vectorised pass for bf16/fp16 -> fp32 on the GPU (model/widen.cu; ATen's widening copy moves one
// element at a time there), for an fp32 w and a contiguous gradient (else ATen's). w itself where
// it already has dtype dt.
at::Tensor to_compute(const at::Tensor& w, at::ScalarType dt, Impl widen = Impl::reference);
// y = weight · cast_back(x_f32 · rsqrt(mean(x_f32²) + eps))  (DESIGN §4: statistics in fp32).
// Forward: ATen's fused RMSNorm. Backward (`impl`, Kernels::rms_norm): reference = ATen's; fused =
// one pass over x and dy giving dx and dw together (model/rms_norm.cu), for x bf16/fp16 on the
// GPU, taken where x is a contiguous, 16-byte aligned [rows, H] with H a multiple of 8 up to 16384
// and autograd records (else ATen's).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps,
                    Impl impl = Impl::reference);
// {rms_norm(x, weight), x} where x's other (residual) consumers take the second: on the fused path
// an alias of x whose gradient the norm's backward adds to dx in its own pass (no separate
// gradient add); elsewhere x itself.
std::pair<at::Tensor, at::Tensor> rms_norm_and_residual(const at::Tensor& x,
                                                        const at::Tensor& weight, double eps,
                                                        Impl impl = Impl::reference);
// residual + x · wᵀ (x [rows, in], w [out, in] in x's dtype, residual [rows, out] or undefined:
// added by the GEMM's epilogue; no bias anywhere in the draft) as one autograd function whose
// weight gradient goes through `grad`; x's gradient is formed only where x needs one.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const WeightGrad& grad = {},
                  const at::Tensor& residual = {});
// The midlayer's input and its q|k|v projection as one autograd function: x = cat(rms_norm(emb,
// w_emb), rms_norm(h, w_hidden)) with emb = embed[ids] (embeddings first; ids in [0, embed rows):
// the fused kernel reads them unchecked, the caller clamps), and x · wᵀ. x and
// emb ([rows, 2H] and [rows, H]) are not kept for backward: it re-gathers emb from ids and
// recomputes x (two norms, one pass each) from h, which the unroll keeps anyway. The embedding
// table gets no gradient (frozen). Weights in h's dtype; w's gradient (and w_emb's, derived from
// it) goes through `grad`. The norms (`norms`, Kernels::input_norms): reference = gather, ATen's
// RMSNorm, cat; fused = the rows kernel (model/rms_norm.cu) for h bf16/fp16 on the GPU: the
// embedding rows read by id and both halves of x written in place, taken where embed is in h's
// dtype and both are contiguous [*, H] with H a multiple of 8 up to 16384 (else the reference).
// The backward's hidden norm is rms_norm's, with `norm_backward` (Kernels::rms_norm).
// Returns {x · wᵀ, h}, the second for h's other (residual) consumer: an alias of h whose gradient
// the backward adds to dh, on the fused path inside the hidden norm's backward pass (no separate
// gradient add).
std::pair<at::Tensor, at::Tensor> input_projection_and_residual(
    const at::Tensor& embed, const at::Tensor& ids, const at::Tensor& h, const at::Tensor& w_emb,
    const at::Tensor& w_hidden, const at::Tensor& w, double eps, const WeightGrad& grad = {},
    Impl norms = Impl::reference, Impl norm_backward = Impl::reference);

// inv_freq_i = θ^(−2i/d) with rope scaling applied, fp32 [d/2].
at::Tensor rope_inv_freq(const DraftArchConfig& cfg, c10::Device device);
// cos/sin tables [S, d] in fp32 for int64 positions [S]: cat(freqs, freqs).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& positions);
// Non-interleaved (rotate-half) RoPE of x [S, heads, d] (last dim contiguous, rows and heads may
// be strided): x·cos + rotate_half(x)·sin with tables from rope_tables, as one autograd function
// whose backward is the same rotation with −sin. `impl` (Kernels::rope): reference = ATen, tables
// cast to x's dtype (every device and dtype); fused = the CUDA kernel (model/rope.cu: x bf16/fp16
// on the GPU, fp32 tables, one pass, one rounding).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                      Impl impl = Impl::reference);
// The rotation alone (no autograd), contiguous result; sign = −1 is its transpose.
at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double sign,
                     Impl impl = Impl::reference);

}  // namespace eaglet::model
