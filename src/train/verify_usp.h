// The USP health check behind `eaglet verify-usp` (DESIGN §5 correctness bar): D × grad_accum
// deterministic samples through the training step exactly as `eaglet train` assembles it
// (train/step.h: the configured Ulysses × Ring layout, kernels, MLP recomputation, the
// accumulation's normalisation and the gradient sync over data-parallel replicas), against the
// independent fp64 dense reference (model/reference.h) of the whole samples on one rank, compared
// loss by loss and gradient tensor by gradient tensor (core/tensor_compare.h).
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"
#include "core/tensor_compare.h"
#include "dist/process_groups.h"

namespace eaglet::train {

struct VerifyOptions {
  int64_t seq_len = 0;  // S; 0 = data.max_seq_length
  int64_t seed = 1;
  double tol_loss = 0, tol_grad = 0;  // 0 = by dtype: fp32 1e-5 / 1e-5, bf16 2e-2 / 3e-2
  double tol_row = 0;                 // row-normalised errors; 0 = by dtype: fp32 1e-4, bf16 1e-1
  bool loss_in_last_shard = false;    // put every loss token in the last shard (others have none)
  // > 1: each sample packs this many documents (manifest `segments`, seeded random lengths);
  // the reference is then each document alone, its sums over the pack's joint counts.
  int64_t documents = 1;
};

struct VerifyResult {
  std::string against;                        // what loss and grad compare with
  TensorError loss, grad;                     // per-step losses of every sample; worst gradient
  TensorError fp64;                           // the gradients against the fp64 reference
  double tol_fp64 = 0;                        // its max-normalised bound
  std::string worst_grad;                     // the gradient tensor with the worst error
  int64_t samples = 0;                        // D x grad_accum
  double max_rel_loss = 0, max_rel_grad = 0;  // loss.worst(), grad.worst()
  double tol_loss = 0, tol_grad = 0, tol_row = 0;
  bool pass = false;
};

// Collective over the world.
VerifyResult verify_usp(const Config& cfg, const ProcessGroups& groups, const VerifyOptions& opt);

}  // namespace eaglet::train
