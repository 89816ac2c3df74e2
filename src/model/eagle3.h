// The Eagle3 draft (DESIGN §4): weights with SGLang names, kept as fp32 masters, and the
// training-time-test (TTT) unroll over one rank's shard producing per-step loss sums.
// Compute runs in a chosen dtype (bf16 on GPU, fp32 on CPU, fp64 for tests); the matrices are
// cast to it once per unroll and their gradients summed over the steps in fp32 (model/layers.h,
// WeightGrad), landing on the fp32 masters unrounded.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "attention/ttt_attention.h"
#include "core/config.h"
#include "core/kernels.h"
#include "data/batch.h"
#include "model/loss.h"
#include "model/recompute.h"
#include "model/vocab.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::model {

struct Eagle3Weights {
  at::Tensor fc;                                       // [H, num_aux·Ht]
  at::Tensor input_layernorm, hidden_norm, post_norm;  // [H]
  at::Tensor q_proj, k_proj, v_proj, o_proj;           // [nH·d, 2H], [nKV·d, 2H] ×2, [H, nH·d]
  at::Tensor gate_proj, up_proj, down_proj;            // [I, H] ×2, [H, I]
  at::Tensor norm;                                     // [H]
  at::Tensor lm_head;                                  // [Vd, H]
  at::Tensor embed_tokens;                             // [Vt, H], frozen (from the target)

  // The trainable tensors with their SGLang names, in a fixed order (checkpoints, optimizer).
  std::vector<std::pair<std::string, at::Tensor*>> trainable();
  std::vector<std::pair<std::string, const at::Tensor*>> trainable() const;
};

// Expected shape of each trainable tensor (and "embed_tokens.weight").
std::vector<int64_t> weight_shape(const DraftArchConfig& cfg, const std::string& name);

// From scratch, seeded: linear weights ~ N(0, 0.02²) (HF Llama's initializer_range), norms = 1,
// embed_tokens ~ N(0, 0.02²) unless given. fp32 on `device`, trainable ones require grad.
Eagle3Weights init_weights(const DraftArchConfig& cfg, int64_t seed, c10::Device device,
                           const at::Tensor& embed_tokens = {});

// What the loss compares against: the target's lm_head, the draft vocabulary's target ids and t2d.
struct LossTarget {
  at::Tensor full_head;  // [Vt, Ht]
  at::Tensor draft_ids;  // int64 [Vd]: target id of each draft token (Vocab::draft_to_target)
  at::Tensor t2d;        // bool [Vt]
  at::Tensor order;      // int32 [2, Vd]: draft_ids ascending and their draft columns
};

// The loss target on `device`: the target's head (as given) and the vocabulary mapping, with the
// draft ids sorted once (draft_order) for the fused target side.
LossTarget loss_target(const at::Tensor& full_head, const VocabMap& vocab, c10::Device device);

// One rank's shard (DESIGN §3), owned by the data layer.
using data::ShardInput;

struct TttOptions {
  int64_t ttt_length = 7;
  at::ScalarType dtype = at::kFloat;
  std::shared_ptr<attention::Block0> block0;  // block-0 provider (local kernel or ring)
  Communicator* ulysses = nullptr;            // Ulysses group; null or size 1: no all-to-all
  int64_t loss_chunk = 4096;
  MlpRecompute mlp_recompute = MlpRecompute::none;  // what the MLP keeps for backward
  // The objective's step weights, one per step: w_k / accumulation (DESIGN §4).
  std::vector<double> loss_weights;
  Communicator* sp = nullptr;  // SP group: the losses normalise over it; null: this rank alone
  // The ring takes its rows in the zigzag layout (attention/ring.h, RingBalance::zigzag_layout):
  // the shard's rows move to the ranks that train them before the unroll (collective over sp).
  bool zigzag_layout = false;
  // Which ops run eaglet's fused CUDA kernels: every op of the unroll takes its row from here. The
  // default is every reference (runs everywhere); a run sets choose_kernels(device, dtype)
  // (dist/device.h).
  Kernels kernels;
};

struct Objective {
  at::Tensor total;  // differentiable: Σ_k w_k · sum_k / max(N_k, 1) / accumulation
  at::Tensor loss_k, acc_k, count_k;  // [T] global (over the SP group), detached
};

// The unroll, normalised as in DESIGN §4: N_k (each step's masked rows over the SP group) is
// known before the first step, so every step's loss gradients come out already weighted. The
// shard is taken by value: under the zigzag layout its rows as read are let go once moved (pass it
// with std::move where the caller has no further use for it, or that copy stays alive).
Objective ttt_forward(const Eagle3Weights& w, const DraftArchConfig& cfg, const LossTarget& target,
                      ShardInput shard, const TttOptions& opt);

// Step weights: ttt_weights if given, else ttt_decay^k.
std::vector<double> step_weights(const TrainingConfig& t);

}  // namespace eaglet::model
