// The stream eaglet's own CUDA kernels launch on: the current stream of the tensor's device.
// CUDA builds only (include under EAGLET_WITH_CUDA).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>

namespace eaglet {

inline cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

}  // namespace eaglet
