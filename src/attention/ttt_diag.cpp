// Kernel table of the TTT diagonal blocks: the ATen reference and the fused CUDA kernels
// (attention/ttt_diag.cu) for bf16/fp16 on the GPU.
#include "attention/ttt_diag.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/stack.h>

#include "core/error.h"
#include "dist/device.h"

#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAException.h>
#include "dist/cuda_stream.h"

#include "attention/ttt_diag_cuda.h"
#endif

namespace eaglet::attention {
namespace {

at::ScalarType merge_type(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [S, H, d] seen as [S, Hkv, H / Hkv, d]: query head h uses KV head h / (H / Hkv), so a KV tensor
// [S, Hkv, d] unsqueezed to [S, Hkv, 1, d] broadcasts over its group without being copied.
at::Tensor grouped(const at::Tensor& x, int64_t kv) {
  return x.reshape({x.size(0), kv, x.size(1) / kv, x.size(2)});
}
at::Tensor ungrouped(const at::Tensor& x) {
  return x.reshape({x.size(0), x.size(1) * x.size(2), x.size(3)});
}

// --- reference ----------------------------------------------------------------------------------
DiagMerge reference_forward(const at::Tensor& q, const at::Tensor& out0, const at::Tensor& lse0,
                            at::TensorList ks, at::TensorList vs, double scale) {
  const auto mt = merge_type(q);
  const int64_t S = q.size(0), H = q.size(1), kv = ks[0].size(1);
  auto qg = grouped(q.to(mt), kv);
  std::vector<at::Tensor> lses{lse0.to(mt)};
  for (const auto& k : ks)
    lses.push_back((qg * k.to(mt).unsqueeze(2)).sum(-1).reshape({S, H}) * scale);
  auto lse = at::logsumexp(at::stack(lses), {0});
  auto merged = at::exp(lses[0] - lse).unsqueeze(-1) * out0.to(mt);
  for (size_t m = 0; m < vs.size(); ++m)
    merged = merged + ungrouped(grouped(at::exp(lses[m + 1] - lse).unsqueeze(-1), kv) *
                                vs[m].to(mt).unsqueeze(2));
  return {merged.to(q.scalar_type()), lse};
}

DiagGrads reference_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                             const at::Tensor& lse, at::TensorList ks, at::TensorList vs,
                             const at::Tensor& dq0, double scale) {
  const auto mt = merge_type(q);
  const int64_t kv = ks[0].size(1), n = static_cast<int64_t>(ks.size());
  auto qg = grouped(q.to(mt), kv), dog = grouped(dout.to(mt), kv), og = grouped(out.to(mt), kv);
  auto lg = lse.to(mt).reshape({q.size(0), kv, q.size(1) / kv});
  auto dq = at::empty(q.sizes(), q.options().dtype(mt));
  dq.copy_(dq0);
  auto dqg = grouped(dq, kv);  // a view: dq accumulates in place
  DiagGrads r;
  for (int64_t m = 0; m < n; ++m) {
    auto km = ks[m].to(mt).unsqueeze(2), vm = vs[m].to(mt).unsqueeze(2);  // [S, Hkv, 1, d]
    auto w = at::exp((qg * km).sum(-1) * scale - lg);                     // [S, Hkv, group]
    auto gs = (w * (dog * (vm - og)).sum(-1) * scale).unsqueeze(-1);      // dL/dscore · scale
    dqg.add_(gs * km);
    r.dk.push_back((gs * qg).sum(2).to(ks[m].scalar_type()));
    r.dv.push_back((w.unsqueeze(-1) * dog).sum(2).to(vs[m].scalar_type()));
  }
  r.dq = dq.to(q.scalar_type());
  return r;
}

// --- fused (CUDA) -------------------------------------------------------------------------------
bool fused_runs(const at::Tensor& q, at::TensorList ks, Impl impl) {
  if (!use_fused(impl, q, "ttt_diag")) return false;
#ifdef EAGLET_WITH_CUDA
  return q.size(2) <= kMaxHeadDim && static_cast<int64_t>(ks.size()) <= kMaxDiagBlocks &&
         q.size(1) % ks[0].size(1) == 0 && q.size(1) / ks[0].size(1) <= kMaxDiagGroup;
#else
  (void)ks;
  return false;  // not reached: use_fused throws in a build without CUDA
#endif
}

#ifdef EAGLET_WITH_CUDA
DiagPointers pointers(std::vector<at::Tensor>& keep, at::TensorList ks, at::TensorList vs) {
  DiagPointers p{};
  p.count = static_cast<int>(ks.size());
  for (int m = 0; m < p.count; ++m) {
    keep.push_back(ks[m].contiguous());
    p.k[m] = keep.back().data_ptr();
    keep.push_back(vs[m].contiguous());
    p.v[m] = keep.back().data_ptr();
  }
  return p;
}

DiagMerge fused_forward(const at::Tensor& q, const at::Tensor& out0, const at::Tensor& lse0,
                        at::TensorList ks, at::TensorList vs, double scale) {
  const int64_t S = q.size(0), H = q.size(1), d = q.size(2), KV = ks[0].size(1);
  std::vector<at::Tensor> keep;
  auto p = pointers(keep, ks, vs);
  auto qc = q.contiguous(), o0 = out0.to(q.scalar_type()).contiguous(),
       l0 = lse0.to(at::kFloat).contiguous();
  DiagMerge r{at::empty_like(qc), at::empty({S, H}, q.options().dtype(at::kFloat))};
  if (S == 0) return r;
  launch_diag_forward(qc.data_ptr(), o0.data_ptr(), l0.data_ptr<float>(), p, r.out.data_ptr(),
                      r.lse.data_ptr<float>(), S, static_cast<int>(H), static_cast<int>(KV),
                      static_cast<int>(d), static_cast<float>(scale),
                      q.scalar_type() == at::kBFloat16, stream_of(q));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return r;
}

DiagGrads fused_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                         const at::Tensor& lse, at::TensorList ks, at::TensorList vs,
                         const at::Tensor& dq0, double scale) {
  const int64_t S = q.size(0), H = q.size(1), d = q.size(2), KV = ks[0].size(1),
                n = static_cast<int64_t>(ks.size());
  std::vector<at::Tensor> keep;
  auto p = pointers(keep, ks, vs);
  DiagGrads r;
  for (int64_t m = 0; m < n; ++m) {
    r.dk.push_back(at::empty({S, KV, d}, q.options()));
    r.dv.push_back(at::empty({S, KV, d}, q.options()));
    p.dk[m] = r.dk.back().data_ptr();
    p.dv[m] = r.dv.back().data_ptr();
  }
  auto qc = q.contiguous();
  r.dq = at::empty_like(qc);
  if (S == 0) return r;
  // Block 0's dq is read where it lies (cuDNN's layout) as long as its head vectors are contiguous.
  auto base = dq0.to(q.scalar_type());
  if (base.stride(2) != 1) base = base.contiguous();
  auto doc = dout.to(q.scalar_type()).contiguous(), oc = out.to(q.scalar_type()).contiguous(),
       lc = lse.to(at::kFloat).contiguous();
  launch_diag_backward(doc.data_ptr(), qc.data_ptr(), oc.data_ptr(), lc.data_ptr<float>(),
                       base.data_ptr(), base.stride(0), base.stride(1), p, r.dq.data_ptr(), S,
                       static_cast<int>(H), static_cast<int>(KV), static_cast<int>(d),
                       static_cast<float>(scale), q.scalar_type() == at::kBFloat16, stream_of(q));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int64_t m = 0; m < n; ++m) {
    r.dk[m] = r.dk[m].to(ks[m].scalar_type());
    r.dv[m] = r.dv[m].to(vs[m].scalar_type());
  }
  return r;
}
#else
DiagMerge fused_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList,
                        at::TensorList, double) {
  EAGLET_FAIL("the fused TTT diagonal kernel needs a CUDA build");
}
DiagGrads fused_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         at::TensorList, at::TensorList, const at::Tensor&, double) {
  EAGLET_FAIL("the fused TTT diagonal kernel needs a CUDA build");
}
#endif

}  // namespace

DiagMerge diag_merge_forward(const at::Tensor& q, const at::Tensor& out0, const at::Tensor& lse0,
                             at::TensorList ks, at::TensorList vs, double scale, Impl impl) {
  if (fused_runs(q, ks, impl)) return fused_forward(q, out0, lse0, ks, vs, scale);
  return reference_forward(q, out0, lse0, ks, vs, scale);
}

DiagGrads diag_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& out,
                        const at::Tensor& lse, at::TensorList ks, at::TensorList vs,
                        const at::Tensor& dq0, double scale, Impl impl) {
  if (fused_runs(q, ks, impl)) return fused_backward(dout, q, out, lse, ks, vs, dq0, scale);
  return reference_backward(dout, q, out, lse, ks, vs, dq0, scale);
}

}  // namespace eaglet::attention
