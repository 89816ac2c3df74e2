// Every environment variable eaglet reads, read here and nowhere else.
// Launchers (mpirun, srun) describe the process through these; the config file describes the run.
#pragma once

#include <cstdint>
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
// EAGLET_TEST_KILL_IN_CHECKPOINT=<step>[:<point>]: the checkpoint writer kills its own process
// (SIGKILL) at that point of saving that step (train/checkpoint.cpp lists the points; without
// one, "half": half-way through writing the files). Only for the crash-safety tests.
struct CheckpointKill {
  int64_t step = 0;
  std::string point;
};
std::optional<CheckpointKill> test_kill_in_checkpoint();
// EAGLET_TEST_NO_RENAME_EXCHANGE=1: the checkpoint writer acts as on a file system without
// renameat2(RENAME_EXCHANGE) (NFS), to test its fallback. Only for the crash-safety tests.
bool test_no_rename_exchange();
// TorchSpec's USP settings, as its SglEngine exports them for SGLang's writer
// (TORCHSPEC_USP_SHARDED_MOONCAKE, _SP_SIZE, _RING_SIZE, _TTT_LENGTH, _MAX_SEQ_LENGTH): the raw
// text of each one set, for `eaglet data ingest` (which parses them and names a bad one).
struct TorchSpecUsp {
  std::optional<std::string> sharded, sp_size, ring_size, ttt_length, max_seq_length;
};
TorchSpecUsp torchspec_usp();

}  // namespace eaglet::env
