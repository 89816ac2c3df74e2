// Splits MPI_COMM_WORLD by the layout's group colours and wraps each part in the backend that
// matches the device (MPI for CPU, NCCL for CUDA, or MPI through host memory for CUDA when asked).
#include "dist/process_groups.h"

#include "core/error.h"
#include "dist/collective_stats.h"
#include "dist/mpi_communicator.h"
#include "dist/staged_communicator.h"
#include "dist/watchdog.h"
#ifdef EAGLET_WITH_CUDA
#include "dist/nccl_communicator.h"
#endif

namespace eaglet {

ProcessGroups::ProcessGroups(const MpiEnv& env, const Layout& layout, c10::Device device,
                             bool host_collectives)
    : layout_(layout), world_rank_(env.rank()), device_(device) {
  check_layout(layout_);
  EAGLET_CHECK(layout_.world == env.size(), "layout world {} differs from MPI world {}",
               layout_.world, env.size());
  coord_ = coord_of(layout_, world_rank_);
  for (GroupKind kind : kAllGroupKinds) {
    auto members = group_members(layout_, kind, world_rank_);
    MPI_Comm comm;
    EAGLET_MPI_CHECK(
        MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(group_index(layout_, kind, world_rank_)),
                       static_cast<int>(rank_in_group(layout_, kind, world_rank_)), &comm));
    const char* name = group_name(kind);
    std::shared_ptr<Communicator> c;
    if (host_collectives) {  // on the CPU the staging copies nothing: the same path, testable
      auto host = std::make_shared<MpiCommunicator>(comm, members);
      host_groups_[static_cast<size_t>(kind)] = watch::watched(host, name);
      c = std::make_shared<StagedCommunicator>(std::move(host));
    } else if (device_.is_cpu()) {
      c = std::make_shared<MpiCommunicator>(comm, members);
    } else {
#ifdef EAGLET_WITH_CUDA
      // The MPI part bootstraps NCCL and stays as the group's host communicator.
      c = std::make_shared<NcclCommunicator>(comm, members, device_);
      host_groups_[static_cast<size_t>(kind)] =
          watch::watched(std::make_shared<MpiCommunicator>(comm, members), name);
#else
      EAGLET_FAIL("device {} requested but this eaglet build has no CUDA/NCCL", device_.str());
#endif
    }
    EAGLET_CHECK(c->rank() == rank_in_group(layout_, kind, world_rank_),
                 "{} group: MPI placed rank {} at {}, layout says {}", group_name(kind),
                 world_rank_, c->rank(), rank_in_group(layout_, kind, world_rank_));
    groups_[static_cast<size_t>(kind)] = watch::watched(counted(std::move(c)), name);
  }
}

ProcessGroups::~ProcessGroups() = default;

void ProcessGroups::abort() noexcept {
  for (auto& g : groups_)
    if (g) g->abort();
}

std::string ProcessGroups::async_error() const {
  for (GroupKind kind : kAllGroupKinds) {
    const auto& g = groups_[static_cast<size_t>(kind)];
    auto error = g ? g->async_error() : std::string();
    if (!error.empty()) return fmt::format("{} group: {}", group_name(kind), error);
  }
  return {};
}

}  // namespace eaglet
