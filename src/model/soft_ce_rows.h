// The row-wise middle of the fused loss, as a kernel table (reference = ATen ops, any device and
// dtype; fused = one CUDA kernel for bf16/fp16 on the GPU): given a chunk's draft logits z and the
// target rows, each row's loss lse(z) − Σ p·z, argmax z, and dz = (softmax(z) − p)·mask written
// over z. Beside it, the in-place scaling of the loss's kept gradients by the upstream gradient.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet::model {

struct SoftCeRows {
  at::Tensor loss;    // [n], fp32 (fp64 on the fp64 path), not masked
  at::Tensor argmax;  // [n], int64
};

// z [n, Vd] contiguous, compute dtype: replaced by dz. logits [n, Vd] (row-contiguous), lse [n]
// and mask [n] in the accumulation dtype. `kernel`: "auto" (fused where it runs) or "reference".
SoftCeRows soft_ce_rows(at::Tensor& z, const at::Tensor& logits, const at::Tensor& lse,
                        const at::Tensor& mask, const char* kernel = "auto");

// The target rows' lse (accumulation dtype) and argmax (int64, first index on ties) of logits
// [n, Vd] (row-contiguous), written into lse [n] and argmax [n]. Fused: one sweep per row.
void row_lse_argmax(const at::Tensor& logits, at::Tensor lse, at::Tensor argmax,
                    const char* kernel = "auto");

// The draft vocabulary's columns within the target vocabulary, for the target side of a chunk.
struct DraftColumns {
  // draft_ids int64 [Vd] (the target id of each draft column), t2d bool [Vt]; `ascending`: the
  // ids ascend and are t2d's ids (LossTarget::draft_ids_ascending), which the fused entry needs.
  DraftColumns(const at::Tensor& draft_ids, const at::Tensor& t2d, bool ascending);
  // (the draft ids and t2d as given, int64 and bool)
  at::Tensor ids, t2d;
  // Where ascending: t2d as bits (uint8 [ceil(Vt/8)], bit j%8 of byte j/8) and the draft columns
  // before each byte (int32 [ceil(Vt/8)]), so target id j is draft column before[j/8] + the bits
  // set below j in its byte. Undefined otherwise.
  at::Tensor bits, before;
};

// The target side of a chunk from its full-vocabulary logits full [n, Vt] (row-contiguous):
// the draft columns copied into draft [n, Vd], their lse (accumulation dtype) and argmax (int64,
// first draft column on ties) into lse [n] and argmax [n], and in_draft [n] (bool) = t2d[argmax
// of the full row] (first index on ties). Fused (full and draft bf16/fp16 of one dtype on the
// GPU, ascending columns): one sweep per row; otherwise ATen's argmax, index_select and
// row_lse_argmax.
void target_side_rows(const at::Tensor& full, const DraftColumns& columns, at::Tensor draft,
                      at::Tensor lse, at::Tensor argmax, at::Tensor in_draft,
                      const char* kernel = "auto");

// x *= g in place, g a scalar tensor on x's device (the upstream gradient: no host sync). The
// fused entry (contiguous bf16/fp16 x on the GPU, fp32 g) is one vectorised pass; ATen's mul_ by
// a device scalar is a broadcast there and does not vectorise.
void scale_in_place(at::Tensor& x, const at::Tensor& g, const char* kernel = "auto");

}  // namespace eaglet::model
