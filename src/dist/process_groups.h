// This rank's place in the layout and one communicator per group kind (world, dp, sp, ulysses,
// ring), created in that fixed order on every rank. MPI backs CPU runs, NCCL backs CUDA runs (with
// each group's MPI communicator kept for host-side agreements), or with host_collectives MPI
// through host memory (StagedCommunicator: no NCCL, ranks may share a GPU).
#pragma once

#include <c10/core/Device.h>

#include <array>
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/mpi_env.h"
#include "dist/topology.h"

namespace eaglet {

class ProcessGroups {
 public:
  // Collective over the world: every rank must call it with the same layout.
  ProcessGroups(const MpiEnv& env, const Layout& layout, c10::Device device,
                bool host_collectives = false);
  ~ProcessGroups();

  const Layout& layout() const { return layout_; }
  const RankCoord& coord() const { return coord_; }
  int64_t world_rank() const { return world_rank_; }
  c10::Device device() const { return device_; }
  Communicator& group(GroupKind kind) const { return *groups_[static_cast<size_t>(kind)]; }
  // The same group over MPI on the host (CPU tensors), for small agreements that must not wait
  // for the device: the very group() on CPU runs, its own MPI communicator on CUDA runs.
  Communicator& host_group(GroupKind kind) const {
    const auto& h = host_groups_[static_cast<size_t>(kind)];
    return h ? *h : group(kind);
  }

  // Aborts every communicator (error path; peers may be stuck in a collective). Thread-safe.
  void abort() noexcept;
  // The first asynchronous error any communicator reports ("group: error"), or "". Thread-safe.
  std::string async_error() const;

 private:
  Layout layout_;
  RankCoord coord_;
  int64_t world_rank_;
  c10::Device device_;
  // Each wrapped by watch::watched (every operation recorded for the watchdog).
  std::array<std::shared_ptr<Communicator>, std::size(kAllGroupKinds)> groups_;
  // Set on CUDA runs and with host_collectives; shared with a StagedCommunicator in the latter.
  std::array<std::shared_ptr<Communicator>, std::size(kAllGroupKinds)> host_groups_;
};

}  // namespace eaglet
