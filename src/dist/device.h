// Chooses this rank's device (runtime.device: auto | cpu | cuda; GPU = node-local rank) and sets
// the per-rank thread count. The only place that asks whether CUDA exists.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "core/kernels.h"

namespace eaglet {

// Throws eaglet::Error when cuda is requested but absent, or the node has more ranks than GPUs
// unless share_gpus (host-staged collectives): then local rank r takes GPU r mod the GPU count.
c10::Device select_device(const std::string& requested, int64_t local_rank, int64_t local_size,
                          bool share_gpus = false);
// at::set_num_threads(threads) when threads > 0; one inter-op thread.
void set_threads(int64_t threads);
// Number of visible CUDA devices (0 in a CPU build).
int64_t cuda_device_count();
// Peak memory of this rank so far, GiB: the CUDA caching allocator's peak of allocated bytes on
// a GPU, the process's peak resident set (VmHWM) on the CPU.
double peak_memory_gib(c10::Device device);
// "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)" for logs.
std::string device_description(c10::Device device);
// Whether eaglet's own CUDA kernels (src/*/*.cu) can take tensors of `dtype` on `device` at all:
// a CUDA build, a GPU, bf16 or fp16.
bool fused_kernels_run(c10::Device device, at::ScalarType dtype);
// The kernel table (core/kernels.h) of a run computing in `dtype` on `device`, decided once: every
// row fused where fused_kernels_run, else every row on its reference.
Kernels choose_kernels(c10::Device device, at::ScalarType dtype);
// Whether an op takes its fused entry: false for Impl::reference; for Impl::fused true where x
// (the op's compute-dtype tensor) can take it at all, else eaglet::Error naming `op` (no silent
// fallback). The op's own shape limits are checked by the op.
bool use_fused(Impl impl, const at::Tensor& x, const char* op);
// The same for a tensor of `dtype` on `device` that does not exist yet.
bool use_fused(Impl impl, c10::Device device, at::ScalarType dtype, const char* op);

}  // namespace eaglet
