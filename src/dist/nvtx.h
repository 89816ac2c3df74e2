// NVTX ranges on the step's phases, so that an Nsight Systems profile reads without guessing
// (`nsys profile -t cuda,nvtx eaglet bench ...`): forward, backward, each TTT step, gradient sync,
// optimizer, metrics read-back, data. A range costs a function call into the NVTX library only
// while a profiler is attached (NVTX's own contract); in builds without CUDA, or where the CUDA
// toolkit lacks the NVTX 3 headers, it is nothing.
#pragma once

#if defined(EAGLET_WITH_CUDA) && __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
#define EAGLET_HAS_NVTX 1
#else
#define EAGLET_HAS_NVTX 0
#endif

namespace eaglet {

// Whether this build emits NVTX ranges.
inline constexpr bool kNvtx = EAGLET_HAS_NVTX != 0;

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
#if EAGLET_HAS_NVTX
    nvtxRangePushA(name);
#else
    (void)name;
#endif
  }
  ~NvtxRange() {
#if EAGLET_HAS_NVTX
    nvtxRangePop();
#endif
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace eaglet
