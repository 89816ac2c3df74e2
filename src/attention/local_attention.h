// Local (one-rank) attention kernels returning the log-sum-exp, as one table: a plain reference
// (dense mask, any dtype, fp32-or-better softmax) and LibTorch's fused flash kernels (CPU and GPU).
// The TTT merge and the ring call them for block 0 and need, in backward, a kernel that accepts an
// externally merged (out, lse): all entries here do.
//
// Layout: q [B, H, Sq, d]; k, v [B, Hkv, Sk, d] with H % Hkv == 0 (GQA); out like q; lse
// [B, H, Sq] fp32. causal means query i sees keys j <= i (top-left aligned; Sq == Sk).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace eaglet::attention {

// What a kernel's forward leaves for its backward besides q, k, v, out and lse.
struct KernelState {
  std::vector<at::Tensor> tensors;                // e.g. philox seed/offset, cumulative lengths
  std::vector<int64_t> ints;                      // e.g. max lengths
  std::vector<int64_t> lse_shape;                 // the kernel's own lse layout
  std::vector<int64_t> out_strides, lse_strides;  // as the forward produced them (cuDNN)
  std::vector<KernelState> parts;  // composite providers (the ring): one state per block
};

struct AttnResult {
  at::Tensor out, lse;
  KernelState state;
};

struct LocalKernel {
  const char* name;
  bool native_gqa;  // accepts Hkv < H; otherwise K/V are expanded and their grads summed
  bool (*supports)(c10::Device device, at::ScalarType dtype);
  AttnResult (*forward)(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                        double scale);
  // dq, dk, dv for dout, using `out` and `lse` as given (they may be merged with other blocks).
  std::vector<at::Tensor> (*backward)(const at::Tensor& dout, const at::Tensor& q,
                                      const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& lse,
                                      const KernelState& state, bool causal, double scale);
};

// The table; "auto" picks flash where it runs, else the reference. Throws eaglet::Error naming
// the kernel when it does not support the device/dtype.
const LocalKernel& local_kernel(const std::string& name, c10::Device device, at::ScalarType dtype);
const std::vector<LocalKernel>& local_kernels();

// GQA-aware call helpers: expand K/V for kernels without native GQA, fold grads back.
AttnResult attend(const LocalKernel& kernel, const at::Tensor& q, const at::Tensor& k,
                  const at::Tensor& v, bool causal, double scale);
std::vector<at::Tensor> attend_backward(const LocalKernel& kernel, const at::Tensor& dout,
                                        const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out,
                                        const at::Tensor& lse, const KernelState& state,
                                        bool causal, double scale);

}  // namespace eaglet::attention
