// The USP health check behind `eaglet verify-usp` (DESIGN §5 correctness bar): one deterministic
// sample through the configured Ulysses × Ring layout and through a single-rank (P = 1)
// recomputation of the same sample with the same weights, compared loss by loss and gradient by
// gradient.
#pragma once

#include <cstdint>

#include "core/config.h"
#include "dist/process_groups.h"

namespace eaglet::train {

struct VerifyOptions {
  int64_t seq_len = 0;  // S; 0 = data.max_seq_length
  int64_t seed = 1;
  double tol_loss = 0, tol_grad = 0;  // 0 = by dtype: fp32 1e-5 / 1e-5, bf16 2e-2 / 3e-2
  bool loss_in_last_shard = false;    // put every loss token in the last shard (others have none)
};

struct VerifyResult {
  double max_rel_loss = 0, max_rel_grad = 0;  // over the world
  double tol_loss = 0, tol_grad = 0;
  bool pass = false;
};

// Collective over the world.
VerifyResult verify_usp(const Config& cfg, const ProcessGroups& groups, const VerifyOptions& opt);

// Compute dtype of runtime.dtype on a device (auto: bf16 on CUDA, fp32 on CPU).
at::ScalarType compute_dtype(const std::string& name, c10::Device device);

}  // namespace eaglet::train
