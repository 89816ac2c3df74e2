// The draft's building blocks as plain functions on tensors (autograd records them): RMSNorm,
// RoPE (none / linear / llama3 scaling), the linear layers and the weights' compute copies with
// their gradient sums. Matrices are cast to the compute dtype once per unroll (to_compute) and
// their gradients summed in fp32 (WeightGrad); norm weights arrive as fp32 masters and are cast
// at each use, so their per-use gradients (one rounding each) are summed in fp32 on the masters.
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
// themselves: each use's backward adds its dyᵀ·x onto one buffer (no [out × in] product per use,
// no separate add). The buffer is fp32 where dy and x are bf16/fp16 (on the GPU cuBLAS adds each
// product into it in fp32, β = 1; on the CPU the operands are widened first), else their dtype:
// the sum over uses, loss chunks and TTT steps is never rounded to the compute dtype. The last of
// `uses` backward calls gets the complete sum from finish() (to derive from, as the embedding
// norm's weight does); the gradient it then returns (returned()) is the sum for a plain weight,
// nothing for a weight from to_compute, whose backward takes the sum on to the fp32 masters.
// Earlier calls give the weight no gradient. Exact because only the sum over the uses is ever
// read (a weight's gradient is that sum). A handle: copies share the sum, so autograd functions
// keep it in their saved data.
class WeightGrad {
 public:
  WeightGrad() : WeightGrad(1) {}  // one use: its backward returns its own gradient
  explicit WeightGrad(int64_t uses) : WeightGrad(uses, false) {}
  // sum[:, col : col + x.size(1)] (+)= dyᵀ·x for a weight [dy.size(1), cols] (dy [rows, out],
  // x [rows, in]); the first add to a column block (blocks are the same in every use) writes it,
  // later ones add.
  void add(const at::Tensor& dy, const at::Tensor& x, int64_t cols, int64_t col = 0);
  // One use's backward is done: after the last use the complete sum, else undefined.
  at::Tensor finish();
  // The weight's gradient a use's backward returns, given finish()'s result (see above).
  at::Tensor returned(const at::Tensor& sum) const;
  // Kept in an autograd function's saved data under `key`, and taken back (sharing the sum).
  void save(torch::autograd::AutogradContext* ctx, const std::string& key) const;
  static WeightGrad load(torch::autograd::AutogradContext* ctx, const std::string& key);

  // For to_compute: a sum its backward takes (uses return no gradient), and the taking (the sum
  // let go here; undefined where nothing was added).
  static WeightGrad to_masters(int64_t uses) { return WeightGrad(uses, true); }
  at::Tensor take();

 private:
  WeightGrad(int64_t uses, bool to_masters);
  WeightGrad(c10::List<at::Tensor> sum, c10::List<int64_t> state, c10::List<int64_t> written);
  void reset();
  c10::List<at::Tensor> sum_;   // one element (undefined until the first add of a pass)
  c10::List<int64_t> state_;    // {uses, uses finished, to_masters}
  c10::List<int64_t> written_;  // the column blocks (their first column) written in this pass
};

// A weight of the unroll in the compute dtype and where its uses add their gradients.
struct ComputeWeight {
  at::Tensor w;     // the masters stacked by rows, in the compute dtype
  WeightGrad grad;  // summed over the uses (WeightGrad::to_masters where w is a cast)
};

// masters (one dtype, the same columns: q|k|v, gate|up stacked by rows in this order) cast to the
// compute dtype dt as one autograd function, for `uses` uses that add their gradients into `grad`
// and return none for w. Its backward hands the sum to the masters (the fp32 sum itself, split by
// rows: never rounded to dt), adding any gradient that reached w as a tensor (a use outside
// WeightGrad), cast back to the masters' dtype: `widen` (Kernels::widen) reference = ATen's cast,
// fused = one vectorised pass for bf16/fp16 -> fp32 on the GPU (model/widen.cu; ATen's widening
// copy moves one element at a time there), for fp32 masters and a contiguous gradient (else
// ATen's). One master already of dtype dt: itself, with a plain WeightGrad (the last use returns
// the sum as its gradient).
ComputeWeight to_compute(at::TensorList masters, at::ScalarType dt, int64_t uses,
                         Impl widen = Impl::reference);
// One weight whose gradient reaches the cast as a tensor: to_compute({w}, dt, 1, widen).w.
at::Tensor to_compute(const at::Tensor& w, at::ScalarType dt, Impl widen = Impl::reference);
// y = weight · cast_back(x_f32 · rsqrt(mean(x_f32²) + eps))  (DESIGN §4: statistics in fp32).
// weight in any float dtype (the fp32 master in the unroll), cast to x's dtype here: its gradient
// (in x's dtype, one rounding) returns through the cast in weight's dtype.
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
// table gets no gradient (frozen). w in h's dtype; w_emb and w_hidden in any float dtype (the fp32
// masters in the unroll; their gradients come in their dtype). w's gradient goes through `grad`;
// w_emb's is derived from its complete sum (fp32 for bf16/fp16, never rounded to h's dtype). The
// norms (`norms`, Kernels::input_norms): reference = gather, ATen's RMSNorm, cat; fused = the rows
// kernel (model/rms_norm.cu) for h bf16/fp16 on the GPU: the embedding rows read by id and both
// halves of x written in place, taken where embed is in h's dtype and both are contiguous [*, H]
// with H a multiple of 8 up to 16384 (else the reference). The backward's hidden norm is
// rms_norm's, with `norm_backward` (Kernels::rms_norm). Returns {x · wᵀ, h}, the second for h's
// other (residual) consumer: an alias of h whose gradient the backward adds to dh, on the fused
// path inside the hidden norm's backward pass (no separate gradient add).
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
