// Reads the environment once per call; no other file calls getenv.
#include "core/env.h"

#include <cstdlib>

namespace eaglet::env {
namespace {
std::optional<std::string> get(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}
std::optional<int> get_int(const char* name) {
  auto v = get(name);
  if (!v) return std::nullopt;
  try {
    return std::stoi(*v);
  } catch (...) {
    return std::nullopt;
  }
}
}  // namespace

std::optional<int> launcher_rank() {
  // The launcher's own variable first: under mpirun inside a SLURM allocation every rank inherits
  // the batch step's SLURM_PROCID=0.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (auto r = get_int(name)) return r;
  return std::nullopt;
}
std::optional<int> launcher_local_rank() {
  if (auto r = get_int("OMPI_COMM_WORLD_LOCAL_RANK")) return r;
  return get_int("SLURM_LOCALID");
}
std::optional<std::string> slurm_job_id() {
  return get("SLURM_JOB_ID");
}
std::optional<std::string> log_level() {
  return get("EAGLET_LOG_LEVEL");
}

std::optional<CheckpointKill> test_kill_in_checkpoint() {
  auto v = get("EAGLET_TEST_KILL_IN_CHECKPOINT");
  if (!v) return std::nullopt;
  const auto colon = v->find(':');
  CheckpointKill k;
  try {
    k.step = std::stoll(v->substr(0, colon));
  } catch (...) {
    return std::nullopt;
  }
  k.point = colon == std::string::npos ? "half" : v->substr(colon + 1);
  return k;
}

TorchSpecUsp torchspec_usp() {
  return {get("TORCHSPEC_USP_SHARDED_MOONCAKE"), get("TORCHSPEC_USP_SP_SIZE"),
          get("TORCHSPEC_USP_RING_SIZE"), get("TORCHSPEC_USP_TTT_LENGTH"),
          get("TORCHSPEC_USP_MAX_SEQ_LENGTH")};
}

bool test_no_rename_exchange() {
  return get_int("EAGLET_TEST_NO_RENAME_EXCHANGE").value_or(0) != 0;
}

}  // namespace eaglet::env
