// Every environment variable eaglet reads, read here and nowhere else.
// Launchers (mpirun, srun) describe the process through these; the config file describes the run.
#pragma once

#include <optional>
#include <string>

namespace eaglet::env {

// World rank as the launcher reports it (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID),
// for the moments before MPI is initialised: command-line errors are printed by rank 0 only.
std::optional<int> launcher_rank();
// Local rank on this node as the launcher reports it (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID),
// used only to log; the device choice comes from MPI's shared-memory split.
std::optional<int> launcher_local_rank();
// SLURM job id when running under SLURM (for log headers and checkpoint metadata).
std::optional<std::string> slurm_job_id();
// EAGLET_LOG_LEVEL overrides runtime.log_level (trace, debug, info, warn, error).
std::optional<std::string> log_level();
// EAGLET_TEST_KILL_IN_CHECKPOINT=<step>: the checkpoint writer kills its own process (SIGKILL)
// half-way through saving that step. Only for the crash-safety test.
std::optional<int> test_kill_in_checkpoint();

}  // namespace eaglet::env
