// Device-to-host copies waited for by an event (dist/host_copy.h).
#include "dist/host_copy.h"

#include <ATen/ops/empty.h>

#ifdef EAGLET_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace eaglet {

HostCopy::HostCopy(const at::Tensor& t) {
#ifdef EAGLET_WITH_CUDA
  if (t.is_cuda()) {
    host_ = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
    host_.copy_(t, /*non_blocking=*/true);
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(c10::cuda::getCurrentCUDAStream(t.device().index()));
    done_ = done;
    return;
  }
#endif
  host_ = t.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor HostCopy::get() const {
#ifdef EAGLET_WITH_CUDA
  if (done_) static_cast<at::cuda::CUDAEvent*>(done_.get())->synchronize();
#endif
  return host_;
}

}  // namespace eaglet
