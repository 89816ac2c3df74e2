// The draft's building blocks as plain functions on tensors (autograd records them): RMSNorm,
// RoPE (none / linear / llama3 scaling) and the SwiGLU MLP. Weights arrive as fp32 masters and
// are cast to the compute dtype here, so gradients flow back to the masters in fp32.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/config.h"

namespace eaglet::model {

// y = weight · cast_back(x_f32 · rsqrt(mean(x_f32²) + eps))  (DESIGN §4: statistics in fp32).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// x · weightᵀ with the weight cast to x's dtype (no bias anywhere in the draft).
at::Tensor project(const at::Tensor& x, const at::Tensor& weight);
// The midlayer's input and its q|k|v projection as one autograd function: x = cat(rms_norm(emb,
// w_emb), rms_norm(h, w_hidden)) with emb = embed[ids] (embeddings first), returns x · wᵀ. x and
// emb ([rows, 2H] and [rows, H]) are not kept for backward: it re-gathers emb from ids and
// recomputes x (two norms, one pass each) from h, which the unroll keeps anyway. The embedding
// table gets no gradient (frozen). Weights in h's dtype.
at::Tensor input_projection(const at::Tensor& embed, const at::Tensor& ids, const at::Tensor& h,
                            const at::Tensor& w_emb, const at::Tensor& w_hidden,
                            const at::Tensor& w, double eps);

// inv_freq_i = θ^(−2i/d) with rope scaling applied, fp32 [d/2].
at::Tensor rope_inv_freq(const DraftArchConfig& cfg, c10::Device device);
// cos/sin tables [S, d] in fp32 for int64 positions [S]: cat(freqs, freqs).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& inv_freq,
                                              const at::Tensor& positions);
// Non-interleaved (rotate-half) RoPE of x [S, heads, d] (last dim contiguous, rows and heads may
// be strided): x·cos + rotate_half(x)·sin with tables from rope_tables, as one autograd function
// whose backward is the same rotation with −sin. Kernel table: "reference" (ATen, tables cast to
// x's dtype, every device and dtype) and the fused CUDA kernel (model/rope.cu: bf16/fp16 on the
// GPU, fp32 tables, one pass, one rounding); "auto" takes the fused one where it runs.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                      const char* kernel = "auto");
// The rotation alone (no autograd), contiguous result; sign = −1 is its transpose.
at::Tensor rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, double sign,
                     const char* kernel = "auto");

}  // namespace eaglet::model
