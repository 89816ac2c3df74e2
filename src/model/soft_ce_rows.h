// The row-wise middle of the fused loss, as a kernel table (reference = ATen ops, any device and
// dtype; fused = one CUDA kernel for bf16/fp16 on the GPU): given a chunk's draft logits z and the
// target rows, each row's loss lse(z) − Σ p·z, argmax z, and dz = (softmax(z) − p)·mask written
// over z. Beside it, the in-place scaling of the loss's kept gradients by the upstream gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/kernels.h"

namespace eaglet::model {

struct SoftCeRows {
  at::Tensor loss;    // [n], fp32 (fp64 on the fp64 path), not masked
  at::Tensor argmax;  // [n], int64
};

// z [n, Vd] contiguous, compute dtype: replaced by dz. logits [n, Vd] (row-contiguous), lse [n]
// and mask [n] in the accumulation dtype. `impl`: Kernels::soft_ce_rows (fused: z bf16/fp16 on
// the GPU, logits in z's dtype, lse and mask fp32).
SoftCeRows soft_ce_rows(at::Tensor& z, const at::Tensor& logits, const at::Tensor& lse,
                        const at::Tensor& mask, Impl impl = Impl::reference);

// The target rows' lse (accumulation dtype) and argmax (int64, first index on ties) of logits
// [n, Vd] (row-contiguous), written into lse [n] and argmax [n]. `impl`: Kernels::target_rows
// (fused: logits bf16/fp16 on the GPU, one sweep per row; taken for contiguous fp32 lse and int64
// argmax, else the reference).
void row_lse_argmax(const at::Tensor& logits, at::Tensor lse, at::Tensor argmax,
                    Impl impl = Impl::reference);

// The target side of a chunk from its full-vocabulary logits full [n, Vt] (row-contiguous):
// the draft columns (draft_ids [Vd], int64: the target id of each draft column) copied into
// draft [n, Vd], their lse (accumulation dtype) and argmax (int64, first draft column on ties)
// into lse [n] and argmax [n], and in_draft [n] (bool) = t2d[argmax of the full row] (first index
// on ties). order [2, Vd] (int32, draft_order): the target ids ascending and their draft columns.
// `impl`: Kernels::target_rows. Fused (draft, the compute dtype, bf16/fp16 on the GPU): each row of
// full read once, the draft columns picked from it by id, where full has draft's dtype (else
// ATen's argmax and index_select, then row_lse_argmax's fused sweep); reference: ATen's argmax,
// index_select and row_lse_argmax.
void target_side_rows(const at::Tensor& full, const at::Tensor& draft_ids, const at::Tensor& order,
                      const at::Tensor& t2d, at::Tensor draft, at::Tensor lse, at::Tensor argmax,
                      at::Tensor in_draft, Impl impl = Impl::reference);
at::Tensor draft_order(const at::Tensor& draft_ids);

// x *= g in place, g a scalar tensor on x's device (the upstream gradient: no host sync). `impl`:
// Kernels::scale; fused (x bf16/fp16 on the GPU, taken where it is contiguous) is one vectorised
// pass with g in fp32; ATen's mul_ by a device scalar is a broadcast there and does not vectorise.
void scale_in_place(at::Tensor& x, const at::Tensor& g, Impl impl = Impl::reference);

}  // namespace eaglet::model
