// A device tensor's copy to the host that the host waits for later, and then only for the work
// queued before the copy: the step's metrics are read back once the next step is queued behind
// them, so the device does not drain between steps. On the CPU a plain copy.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

namespace eaglet {

class HostCopy {
 public:
  HostCopy() = default;
  // Enqueues the copy of `t` (CUDA: into pinned host memory on the current stream, an event
  // recorded after it); waits for nothing.
  explicit HostCopy(const at::Tensor& t);
  bool defined() const { return host_.defined(); }
  // The host tensor, once the copy has landed (waits for the event: the work before the copy).
  at::Tensor get() const;

 private:
  at::Tensor host_;
  std::shared_ptr<void> done_;  // CUDA: the event after the copy
};

}  // namespace eaglet
