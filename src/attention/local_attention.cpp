// The local attention kernel table. The reference entry is the definition the fused entries are
// tested against: softmax(q kᵀ·scale + mask) v with its log-sum-exp, and the standard backward
// dS = P ⊙ (dP − rowsum(dout ⊙ out)) computed from the given out and lse.
#include "attention/local_attention.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention_backward.h>
#include <ATen/ops/_scaled_dot_product_flash_attention.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_backward.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu_backward.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/triu.h>
#include <ATen/ops/zeros.h>

#include "core/error.h"

namespace eaglet::attention {
namespace {

at::ScalarType math_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor causal_mask(int64_t sq, int64_t sk, c10::Device device) {
  // true where key j > query i: masked out.
  return at::triu(at::ones({sq, sk}, at::TensorOptions().dtype(at::kBool).device(device)), 1);
}

// --- reference ----------------------------------------------------------------------------------
AttnResult ref_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                       double scale) {
  auto mt = math_type(q.scalar_type());
  auto s = at::matmul(q.to(mt), k.to(mt).transpose(-1, -2)) * scale;
  if (causal) s = s.masked_fill(causal_mask(q.size(2), k.size(2), q.device()), -INFINITY);
  auto lse = at::logsumexp(s, {-1});
  auto p = at::exp(s - lse.unsqueeze(-1));
  auto out = at::matmul(p, v.to(mt)).to(q.scalar_type());
  return {out, lse, {}};  // lse in fp32 (fp64 on the fp64 test path)
}

std::vector<at::Tensor> ref_backward(const at::Tensor& dout, const at::Tensor& q,
                                     const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& out, const at::Tensor& lse,
                                     const KernelState&, bool causal, double scale) {
  auto mt = math_type(q.scalar_type());
  auto q_ = q.to(mt), k_ = k.to(mt), v_ = v.to(mt), do_ = dout.to(mt);
  auto s = at::matmul(q_, k_.transpose(-1, -2)) * scale;
  if (causal) s = s.masked_fill(causal_mask(q.size(2), k.size(2), q.device()), -INFINITY);
  auto p = at::exp(s - lse.to(mt).unsqueeze(-1));
  auto dp = at::matmul(do_, v_.transpose(-1, -2));
  auto delta = (do_ * out.to(mt)).sum({-1}, true);
  auto ds = p * (dp - delta);
  auto dq = at::matmul(ds, k_) * scale;
  auto dk = at::matmul(ds.transpose(-1, -2), q_) * scale;
  auto dv = at::matmul(p.transpose(-1, -2), do_);
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

// --- flash (CPU build of LibTorch) ---------------------------------------------------------------
AttnResult flash_cpu_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             bool causal, double scale) {
  auto [out, lse] =
      at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, {}, scale);
  return {out, lse, {}};
}

std::vector<at::Tensor> flash_cpu_backward(const at::Tensor& dout, const at::Tensor& q,
                                           const at::Tensor& k, const at::Tensor& v,
                                           const at::Tensor& out, const at::Tensor& lse,
                                           const KernelState&, bool causal, double scale) {
  auto [dq, dk, dv] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
      dout.contiguous(), q, k, v, out.contiguous(), lse.contiguous(), 0.0, causal, {}, scale);
  return {dq, dk, dv};
}

// --- flash (CUDA) ------------------------------------------------------------------------------
AttnResult flash_cuda_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              bool causal, double scale) {
  auto r = at::_scaled_dot_product_flash_attention(q, k, v, 0.0, causal, false, scale);
  KernelState st;
  st.tensors = {std::get<2>(r), std::get<3>(r), std::get<6>(r), std::get<7>(r)};
  st.ints = {std::get<4>(r).expect_int(), std::get<5>(r).expect_int()};
  auto lse = std::get<1>(r);
  st.lse_shape = lse.sizes().vec();
  return {std::get<0>(r), lse.reshape({q.size(0), q.size(1), q.size(2)}), st};
}

std::vector<at::Tensor> flash_cuda_backward(const at::Tensor& dout, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& out, const at::Tensor& lse,
                                            const KernelState& st, bool causal, double scale) {
  // Only the last dimension must be contiguous: the kernel works in [B, S, H, d], which the
  // [1, H, S, d] views of our [S, H, d] tensors already are.
  auto [dq, dk, dv] = at::_scaled_dot_product_flash_attention_backward(
      dout, q, k, v, out, lse.reshape(st.lse_shape).contiguous(), st.tensors[0], st.tensors[1],
      st.ints[0], st.ints[1], 0.0, causal, st.tensors[2], st.tensors[3], scale);
  return {dq, dk, dv};
}

// --- cuDNN (CUDA) ------------------------------------------------------------------------------
// cuDNN builds its backward graph for the strides its forward produced: out, dout and lse must
// come back in exactly those strides (a merged out in another layout gave wrong dq/dk on H200
// with LibTorch 2.11 while dv stayed right, i.e. rowsum(dout·out) was read with the wrong
// strides).
// cuDNN builds an execution graph for every new shape: about 100 ms each on H200 (LibTorch 2.11),
// so a length mix of 22 distinct lengths ran at 0.25x the tokens/s of one 8192-token sample
// (docs/PERFORMANCE.md). Causal attention over equal query and key lengths therefore runs at the
// length rounded up to kCudnnBucket, zero rows appended at the tail: no real query sees a key
// past its own row, and the appended queries' outputs are dropped (their dout is zero, so they add
// nothing to dk and dv; their lse is set to 0, which keeps exp(s − lse) finite). Exact, for up to
// kCudnnBucket − 1 rows more work; a mix then reuses one graph per bucket.
constexpr int64_t kCudnnBucket = 256;

int64_t cudnn_rows(const at::Tensor& q, const at::Tensor& k, bool causal) {
  const int64_t S = q.size(2);
  if (!causal || k.size(2) != S || S % kCudnnBucket == 0) return S;
  return (S + kCudnnBucket - 1) / kCudnnBucket * kCudnnBucket;
}

// x [1, H, S, ...] with zero rows appended along dim 2 up to `rows`.
at::Tensor pad_rows(const at::Tensor& x, int64_t rows) {
  if (x.size(2) == rows) return x;
  auto shape = x.sizes().vec();
  shape[2] = rows - x.size(2);
  return at::cat({x, at::zeros(shape, x.options())}, 2);
}

AttnResult cudnn_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                         double scale) {
  const int64_t S = q.size(2), n = cudnn_rows(q, k, causal);
  auto r = at::_scaled_dot_product_cudnn_attention(pad_rows(q, n), pad_rows(k, n), pad_rows(v, n),
                                                   std::nullopt, /*compute_lse=*/true, 0.0, causal,
                                                   false, scale);
  const auto &out = std::get<0>(r), &lse = std::get<1>(r);
  KernelState st;
  st.tensors = {std::get<2>(r), std::get<3>(r), std::get<6>(r), std::get<7>(r)};
  st.ints = {std::get<4>(r).expect_int(), std::get<5>(r).expect_int()};
  st.lse_shape = lse.sizes().vec();
  st.out_strides = out.strides().vec();
  st.lse_strides = lse.strides().vec();
  return {out.narrow(2, 0, S), lse.reshape({q.size(0), q.size(1), n}).narrow(2, 0, S), st};
}

at::Tensor in_strides(const at::Tensor& x, at::IntArrayRef sizes, at::IntArrayRef strides) {
  auto y = x.reshape(sizes);
  if (y.strides() == strides) return y;
  return at::empty_strided(sizes, strides, y.options()).copy_(y);
}

std::vector<at::Tensor> cudnn_backward(const at::Tensor& dout, const at::Tensor& q,
                                       const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& out, const at::Tensor& lse,
                                       const KernelState& st, bool causal, double scale) {
  const int64_t S = q.size(2), n = cudnn_rows(q, k, causal);
  auto out_p = pad_rows(out, n);
  auto o = in_strides(out_p, out_p.sizes(), st.out_strides),
       d = in_strides(pad_rows(dout, n), out_p.sizes(), st.out_strides);
  auto l = in_strides(pad_rows(lse.to(at::kFloat).reshape({q.size(0), q.size(1), S}), n),
                      st.lse_shape, st.lse_strides);
  auto [dq, dk, dv] = at::_scaled_dot_product_cudnn_attention_backward(
      d, pad_rows(q, n), pad_rows(k, n), pad_rows(v, n), o, l, st.tensors[2], st.tensors[3],
      at::Tensor(), st.tensors[0], st.tensors[1], st.ints[0], st.ints[1], 0.0, causal, scale);
  return {dq.narrow(2, 0, S), dk.narrow(2, 0, S), dv.narrow(2, 0, S)};
}

bool any_device(c10::Device, at::ScalarType) {
  return true;
}
bool cpu_float(c10::Device d, at::ScalarType t) {
  return d.is_cpu() &&
         (t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf);
}
bool cuda_half(c10::Device d, at::ScalarType t) {
  return d.is_cuda() && (t == at::kBFloat16 || t == at::kHalf);
}

}  // namespace

const std::vector<LocalKernel>& local_kernels() {
  static const std::vector<LocalKernel> table = {
      {"reference", false, any_device, ref_forward, ref_backward},
      {"flash", false, cpu_float, flash_cpu_forward, flash_cpu_backward},
      {"flash", true, cuda_half, flash_cuda_forward, flash_cuda_backward},
      {"cudnn", true, cuda_half, cudnn_forward, cudnn_backward},
  };
  return table;
}

const LocalKernel& local_kernel(const std::string& name, c10::Device device, at::ScalarType dtype) {
  // auto: cuDNN on the GPU (about twice flash's speed at these shapes on H200), flash on the CPU.
  std::string want = name;
  if (want == "auto") want = device.is_cuda() ? "cudnn" : "flash";
  for (const auto& k : local_kernels())
    if (want == k.name && k.supports(device, dtype)) return k;
  if (name == "auto") return local_kernels().front();
  EAGLET_FAIL("model.attention={}: this kernel does not run on {} with {}; use auto or reference",
              name, device.str(), c10::toString(dtype));
}

namespace {
at::Tensor expand_kv(const at::Tensor& x, int64_t heads) {
  const int64_t kv = x.size(1);
  if (kv == heads) return x;
  return x.unsqueeze(2)
      .expand({x.size(0), kv, heads / kv, x.size(2), x.size(3)})
      .reshape({x.size(0), heads, x.size(2), x.size(3)});
}
at::Tensor fold_kv(const at::Tensor& g, int64_t kv) {
  const int64_t heads = g.size(1);
  if (kv == heads) return g;
  return g.reshape({g.size(0), kv, heads / kv, g.size(2), g.size(3)}).sum(2);
}
}  // namespace

AttnResult attend(const LocalKernel& kernel, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, bool causal, double scale) {
  if (kernel.native_gqa) return kernel.forward(q, k, v, causal, scale);
  return kernel.forward(q, expand_kv(k, q.size(1)), expand_kv(v, q.size(1)), causal, scale);
}

std::vector<at::Tensor> attend_backward(const LocalKernel& kernel, const at::Tensor& dout,
                                        const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out,
                                        const at::Tensor& lse, const KernelState& state,
                                        bool causal, double scale) {
  if (kernel.native_gqa) return kernel.backward(dout, q, k, v, out, lse, state, causal, scale);
  auto g = kernel.backward(dout, q, expand_kv(k, q.size(1)), expand_kv(v, q.size(1)), out, lse,
                           state, causal, scale);
  return {g[0], fold_kv(g[1], k.size(1)), fold_kv(g[2], v.size(1))};
}

}  // namespace eaglet::attention
