// Device selection and thread settings.
#include "dist/device.h"

#include <ATen/Parallel.h>

#include <fstream>
#include <string>

#include "core/error.h"
#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace eaglet {

int64_t cuda_device_count() {
#ifdef EAGLET_WITH_CUDA
  return c10::cuda::device_count();
#else
  return 0;
#endif
}

bool fused_kernels_run(c10::Device device, at::ScalarType dtype) {
#ifdef EAGLET_WITH_CUDA
  return device.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf);
#else
  (void)device, (void)dtype;
  return false;
#endif
}

Kernels choose_kernels(c10::Device device, at::ScalarType dtype) {
  return Kernels::all(fused_kernels_run(device, dtype) ? Impl::fused : Impl::reference);
}

bool use_fused(Impl impl, c10::Device device, at::ScalarType dtype, const char* op) {
  if (impl == Impl::reference) return false;
  EAGLET_CHECK(fused_kernels_run(device, dtype),
               "{}: the fused kernel was asked for with {} on {}; it needs bf16/fp16 on a GPU{} "
               "(choose_kernels picks the reference elsewhere)",
               op, c10::toString(dtype), device.str(),
#ifdef EAGLET_WITH_CUDA
               ""
#else
               " in a CUDA build of eaglet"
#endif
  );
  return true;
}

bool use_fused(Impl impl, const at::Tensor& x, const char* op) {
  return use_fused(impl, x.device(), x.scalar_type(), op);
}

c10::Device select_device(const std::string& requested, int64_t local_rank, int64_t local_size,
                          bool share_gpus) {
  int64_t gpus = cuda_device_count();
  bool use_cuda = requested == "cuda" || (requested == "auto" && gpus > 0);
  if (!use_cuda) return c10::Device(c10::kCPU);
  EAGLET_CHECK(gpus > 0, "runtime.device=cuda: no CUDA device visible{}",
#ifdef EAGLET_WITH_CUDA
               ""
#else
               " (this eaglet build has no CUDA: build it against a CUDA PyTorch)"
#endif
  );
  EAGLET_CHECK(
      share_gpus || local_rank < gpus,
      "runtime.device={}: {} ranks on this node but only {} GPUs visible (local rank {} has none); "
      "start one rank per GPU (or, for checks only, runtime.collectives=host lets ranks share)",
      requested, local_size, gpus, local_rank);
  c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % gpus));
#ifdef EAGLET_WITH_CUDA
  c10::cuda::set_device(device.index());
#endif
  return device;
}

void set_threads(int64_t threads) {
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  at::set_num_interop_threads(1);
}

double peak_memory_gib(c10::Device device) {
#ifdef EAGLET_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30);
  }
#endif
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / (1 << 20);  // kB
  return 0;
}

std::string device_description(c10::Device device) {
#ifdef EAGLET_WITH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess)
      return device.str() + " (" + prop.name + ")";
  }
#endif
  return device.str();
}

}  // namespace eaglet
