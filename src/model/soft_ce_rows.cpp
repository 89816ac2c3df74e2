// Kernel table of the loss rows: the ATen reference (every device and dtype) and the fused CUDA
// kernel (model/soft_ce_rows.cu) for bf16/fp16 on the GPU.
#include "model/soft_ce_rows.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/stack.h>

#include "core/error.h"
#include "dist/device.h"
#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include "dist/cuda_stream.h"
#endif

namespace eaglet::model {

#ifdef EAGLET_WITH_CUDA
// model/soft_ce_rows.cu
void launch_soft_ce_rows(void* z, const void* logits, int64_t logits_stride, const float* lse,
                         const float* mask, float* loss, int64_t* argmax, int64_t rows,
                         int64_t vocab, bool bf16, cudaStream_t stream);
void launch_lse_argmax(const void* logits, int64_t stride, float* lse, int64_t* argmax,
                       int64_t rows, int64_t vocab, bool bf16, cudaStream_t stream);
void launch_target_side(const void* full, int64_t full_stride, const int* order, int draft_vocab,
                        const bool* t2d, void* draft, int64_t draft_stride, float* lse,
                        int64_t* argmax, bool* in_draft, int64_t rows, int64_t vocab, bool bf16,
                        cudaStream_t stream);
void launch_scale(void* x, const float* g, int64_t n, bool bf16, cudaStream_t stream);
#endif

namespace {

SoftCeRows reference(at::Tensor& z, const at::Tensor& logits, const at::Tensor& lse,
                     const at::Tensor& mask) {
  const auto acc = lse.scalar_type();
  auto ls = at::log_softmax(z.to(acc), -1);
  auto p = at::exp(logits.to(acc) - lse.unsqueeze(-1));
  SoftCeRows r{-(p * ls).sum(-1), at::argmax(z, -1)};
  z.copy_((at::exp(ls) - p) * mask.unsqueeze(-1));
  return r;
}

SoftCeRows fused(at::Tensor& z, const at::Tensor& logits, const at::Tensor& lse,
                 const at::Tensor& mask) {
#ifdef EAGLET_WITH_CUDA
  const int64_t n = z.size(0), v = z.size(1);
  EAGLET_CHECK(z.is_contiguous() && logits.stride(1) == 1 &&
                   logits.scalar_type() == z.scalar_type() && lse.scalar_type() == at::kFloat &&
                   mask.scalar_type() == at::kFloat,
               "soft_ce_rows: unexpected layout or dtypes");
  auto l = lse.contiguous(), m = mask.contiguous();
  SoftCeRows r{at::empty({n}, lse.options()), at::empty({n}, lse.options().dtype(at::kLong))};
  if (n == 0) return r;
  launch_soft_ce_rows(z.data_ptr(), logits.data_ptr(), logits.stride(0), l.data_ptr<float>(),
                      m.data_ptr<float>(), r.loss.data_ptr<float>(), r.argmax.data_ptr<int64_t>(),
                      n, v, z.scalar_type() == at::kBFloat16, stream_of(z));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
#else
  return reference(z, logits, lse, mask);
#endif
}

}  // namespace

SoftCeRows soft_ce_rows(at::Tensor& z, const at::Tensor& logits, const at::Tensor& lse,
                        const at::Tensor& mask, Impl impl) {
  if (use_fused(impl, z, "soft_ce_rows")) return fused(z, logits, lse, mask);
  return reference(z, logits, lse, mask);
}

void row_lse_argmax(const at::Tensor& logits, at::Tensor lse, at::Tensor argmax, Impl impl) {
  if (use_fused(impl, logits, "row_lse_argmax (target rows)") && logits.stride(1) == 1 &&
      lse.scalar_type() == at::kFloat && lse.is_contiguous() && argmax.is_contiguous() &&
      argmax.scalar_type() == at::kLong) {
    if (logits.size(0) == 0) return;
#ifdef EAGLET_WITH_CUDA
    launch_lse_argmax(logits.data_ptr(), logits.stride(0), lse.data_ptr<float>(),
                      argmax.data_ptr<int64_t>(), logits.size(0), logits.size(1),
                      logits.scalar_type() == at::kBFloat16, stream_of(logits));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
#endif
  }
  lse.copy_(at::logsumexp(logits.to(lse.scalar_type()), {-1}));
  argmax.copy_(at::argmax(logits, -1));
}

at::Tensor draft_order(const at::Tensor& draft_ids) {
  const auto [ids, cols] = draft_ids.to(at::kLong).sort();
  return at::stack({ids, cols}).to(at::kInt).contiguous();
}

void target_side_rows(const at::Tensor& full, const at::Tensor& draft_ids, const at::Tensor& order,
                      const at::Tensor& t2d, at::Tensor draft, at::Tensor lse, at::Tensor argmax,
                      at::Tensor in_draft, Impl impl) {
  if (use_fused(impl, draft, "target rows") && full.scalar_type() == draft.scalar_type() &&
      full.stride(1) == 1 && draft.stride(1) == 1 && lse.scalar_type() == at::kFloat &&
      lse.is_contiguous() && argmax.scalar_type() == at::kLong && argmax.is_contiguous() &&
      in_draft.scalar_type() == at::kBool && in_draft.is_contiguous() &&
      order.scalar_type() == at::kInt && order.is_contiguous() && order.dim() == 2 &&
      order.size(0) == 2 && order.size(1) == draft.size(1) && t2d.scalar_type() == at::kBool &&
      t2d.is_contiguous()) {
    const int64_t n = full.size(0);
    if (n == 0) return;
#ifdef EAGLET_WITH_CUDA
    launch_target_side(full.data_ptr(), full.stride(0), order.data_ptr<int>(),
                       static_cast<int>(order.size(1)), t2d.data_ptr<bool>(), draft.data_ptr(),
                       draft.stride(0), lse.data_ptr<float>(), argmax.data_ptr<int64_t>(),
                       in_draft.data_ptr<bool>(), n, full.size(1),
                       full.scalar_type() == at::kBFloat16, stream_of(full));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
#endif
  }
  in_draft.copy_(t2d.index_select(0, at::argmax(full, -1)));
  if (full.scalar_type() == draft.scalar_type() && draft.is_contiguous())
    at::index_select_out(draft, full, 1, draft_ids);
  else
    draft.copy_(at::index_select(full, 1, draft_ids));
  row_lse_argmax(draft, lse, argmax, impl);
}

void scale_in_place(at::Tensor& x, const at::Tensor& g, Impl impl) {
  EAGLET_CHECK(g.numel() == 1 && g.device() == x.device(),
               "scale_in_place: g must be a scalar on {}", x.device().str());
  if (use_fused(impl, x, "scale") && x.is_contiguous()) {
#ifdef EAGLET_WITH_CUDA
    auto gf = g.to(at::kFloat);
    launch_scale(x.data_ptr(), gf.data_ptr<float>(), x.numel(), x.scalar_type() == at::kBFloat16,
                 stream_of(x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
#endif
  }
  x.mul_(g);
}

}  // namespace eaglet::model
