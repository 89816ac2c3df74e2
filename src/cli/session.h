// The start-up every distributed command shares: MPI, console log, config (parsed and validated
// on every rank, errors agreed so all ranks exit together), output folder (locked for the run:
// io/run_lock.h) with per-rank logs and the config dump, device, process groups, the progress
// watchdog (dist/watchdog.h); then the command body under one error policy.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>

#include "cli/args.h"
#include "core/config.h"
#include "dist/mpi_env.h"
#include "dist/process_groups.h"
#include "dist/watchdog.h"
#include "io/run_lock.h"

namespace eaglet::cli {

struct Session {
  const MpiEnv& env;
  Config config;
  c10::Device device{c10::kCPU};
  std::unique_ptr<ProcessGroups> groups;
  std::unique_ptr<Watchdog> watchdog;  // runtime.timeout_s; stopped before the groups go
  std::unique_ptr<io::RunLock> lock;   // world rank 0: output_dir held for the whole run
};

// Options every distributed command accepts.
std::vector<OptionSpec> session_options();

// Runs `body` after the shared start-up. Errors every rank agreed on (bad config, unusable output
// folder, missing GPU) exit with 2 on every rank; any other error is logged and aborts the whole
// job (exit 1), so no rank is left waiting in a collective.
int run_distributed(const ParsedArgs& args, const std::string& command,
                    const std::function<int(Session&)>& body);

}  // namespace eaglet::cli
