// `eaglet train` (DESIGN §6): prefetched pre-sharded samples -> TTT forward/backward with USP ->
// gradient sync (sum over SP, mean over DP) -> clipping -> AdamW on fp32 masters -> schedule, with
// gradient accumulation, atomic checkpoints, resume (also onto another DP size), pre-emption by
// SIGTERM/SIGUSR1 agreed by all ranks at a step boundary, metrics.jsonl and a progress line.
#pragma once

#include <string>

#include "core/config.h"
#include "dist/mpi_env.h"
#include "dist/process_groups.h"
#include "model/eagle3.h"

namespace eaglet::train {

struct TrainOptions {
  std::string resume;      // "", "auto" or a checkpoint folder
  std::string dump_grads;  // when set: each step's synced, pre-clip gradients written here
};

// SIGTERM/SIGUSR1 set a flag the training loop checks at every step boundary (all ranks agree,
// save, exit 0). Installed before MPI start-up so an early signal is not fatal.
void install_signal_handlers();

// Collective over the world. Returns the process exit code (0 also when pre-empted).
int run_training(const Config& cfg, const MpiEnv& env, const ProcessGroups& groups,
                 const TrainOptions& opt);

}  // namespace eaglet::train
