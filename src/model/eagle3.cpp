// The Eagle3 draft's weights and its TTT unroll.
#include "model/eagle3.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/normal.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <numeric>

#include <fmt/ranges.h>

#include "attention/ring.h"
#include "attention/ulysses.h"
#include "core/error.h"
#include "core/tensor_text.h"
#include "dist/communicator.h"
#include "dist/nvtx.h"
#include "model/layers.h"
#include "model/recompute.h"
#include "model/soft_ce_rows.h"

namespace eaglet::model {

namespace {
template <typename W, typename T>
std::vector<std::pair<std::string, T*>> named(W& w) {
  return {{"fc.weight", &w.fc},
          {"midlayer.input_layernorm.weight", &w.input_layernorm},
          {"midlayer.hidden_norm.weight", &w.hidden_norm},
          {"midlayer.post_attention_layernorm.weight", &w.post_norm},
          {"midlayer.self_attn.q_proj.weight", &w.q_proj},
          {"midlayer.self_attn.k_proj.weight", &w.k_proj},
          {"midlayer.self_attn.v_proj.weight", &w.v_proj},
          {"midlayer.self_attn.o_proj.weight", &w.o_proj},
          {"midlayer.mlp.gate_proj.weight", &w.gate_proj},
          {"midlayer.mlp.up_proj.weight", &w.up_proj},
          {"midlayer.mlp.down_proj.weight", &w.down_proj},
          {"norm.weight", &w.norm},
          {"lm_head.weight", &w.lm_head}};
}
}  // namespace

std::vector<std::pair<std::string, at::Tensor*>> Eagle3Weights::trainable() {
  return named<Eagle3Weights, at::Tensor>(*this);
}
std::vector<std::pair<std::string, const at::Tensor*>> Eagle3Weights::trainable() const {
  return named<const Eagle3Weights, const at::Tensor>(*this);
}

std::vector<int64_t> weight_shape(const DraftArchConfig& c, const std::string& name) {
  const int64_t H = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim;
  if (name == "fc.weight") return {H, c.num_aux_hidden_states * c.target_hidden_size};
  if (name.find("norm") != std::string::npos) return {H};
  if (name == "midlayer.self_attn.q_proj.weight") return {q, 2 * H};
  if (name == "midlayer.self_attn.k_proj.weight" || name == "midlayer.self_attn.v_proj.weight")
    return {kv, 2 * H};
  if (name == "midlayer.self_attn.o_proj.weight") return {H, q};
  if (name == "midlayer.mlp.gate_proj.weight" || name == "midlayer.mlp.up_proj.weight")
    return {c.intermediate_size, H};
  if (name == "midlayer.mlp.down_proj.weight") return {H, c.intermediate_size};
  if (name == "lm_head.weight") return {c.draft_vocab_size, H};
  if (name == "embed_tokens.weight") return {c.vocab_size, H};
  EAGLET_FAIL("no Eagle3 weight is named {}", name);
}

Eagle3Weights init_weights(const DraftArchConfig& cfg, int64_t seed, c10::Device device,
                           const at::Tensor& embed_tokens) {
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  auto cpu = at::TensorOptions().dtype(at::kFloat);
  Eagle3Weights w;
  for (auto& [name, t] : w.trainable()) {
    auto shape = weight_shape(cfg, name);
    *t = name.find("norm") != std::string::npos ? at::ones(shape, cpu)
                                                : at::normal(0.0, 0.02, shape, gen, cpu);
    *t = t->to(device).set_requires_grad(true);
  }
  auto embed_shape = weight_shape(cfg, "embed_tokens.weight");
  if (embed_tokens.defined()) {
    EAGLET_CHECK(embed_tokens.sizes().vec() == embed_shape,
                 "embed_tokens is {}, the draft config needs {}", tensor_text(embed_tokens),
                 shape_text(embed_shape));
    w.embed_tokens = embed_tokens.to(device, at::kFloat);
  } else {
    w.embed_tokens = at::normal(0.0, 0.02, embed_shape, gen, cpu).to(device);
  }
  return w;
}

namespace {
// The matrices cast to the compute dtype once per unroll, not once per use, each with the sum of
// its gradient over its uses (fp32 for bf16/fp16, handed to the fp32 masters unrounded). q, k and
// v as one [(nH + 2·nKV)·d, 2H] weight and gate and up as one [2I, H]: one GEMM per step for each
// group (and one for its input's gradient). The norm weights stay fp32 masters, cast at each use.
struct ComputeWeights {
  ComputeWeight fc, qkv, o_proj, gate_up, down_proj, lm_head;
};

ComputeWeights in_dtype(const Eagle3Weights& w, at::ScalarType dt, int64_t steps, int64_t runs,
                        Impl widen) {
  return {to_compute({w.fc}, dt, runs, widen),
          to_compute({w.q_proj, w.k_proj, w.v_proj}, dt, steps, widen),
          to_compute({w.o_proj}, dt, steps, widen),
          to_compute({w.gate_proj, w.up_proj}, dt, steps, widen),
          to_compute({w.down_proj}, dt, steps, widen),
          to_compute({w.lm_head}, dt, 1, widen)};  // one use: the unroll's fused loss
}
}  // namespace

LossTarget loss_target(const at::Tensor& full_head, const VocabMap& vocab, c10::Device device) {
  auto ids = vocab.draft_to_target().to(device);
  auto order = draft_order(ids);
  return {full_head.to(device), ids, vocab.t2d.to(device), order};
}

Objective ttt_forward(const Eagle3Weights& w, const DraftArchConfig& cfg, const LossTarget& target,
                      ShardInput shard, const TttOptions& opt) {
  const int64_t T = opt.ttt_length;
  const int64_t nH = cfg.num_attention_heads, nKV = cfg.num_key_value_heads, d = cfg.head_dim;
  const double eps = cfg.rms_norm_eps, scale = 1.0 / std::sqrt(static_cast<double>(d));
  EAGLET_CHECK(shard.ids.size(0) > T, "shard of {} rows is not longer than the TTT length {}",
               shard.ids.size(0), T);
  EAGLET_CHECK(static_cast<int64_t>(opt.loss_weights.size()) == T,
               "{} loss weights for {} TTT steps", opt.loss_weights.size(), T);
  const int64_t U = opt.ulysses != nullptr ? opt.ulysses->size() : 1;
  // The rows trained here: runs of own rows, each followed by its T-row halo. The shard as read is
  // one run; under the zigzag layout the rows move first (attention/ring.h).
  // A packed sample arrives in runs already (one per document piece, data/sharding.h).
  const bool packed = !shard.runs.empty();
  attention::ZigzagRows in{{shard.hs, shard.ids, shard.lhs, shard.loss_mask},
                           packed ? shard.runs : std::vector<int64_t>{shard.ids.size(0) - T},
                           shard.positions};
  EAGLET_CHECK(!packed || static_cast<int64_t>(shard.runs.size()) * T +
                                  std::accumulate(shard.runs.begin(), shard.runs.end(),
                                                  int64_t{0}) ==
                              shard.ids.size(0),
               "packed shard: runs {} with T = {} do not cover its {} rows",
               fmt::join(shard.runs, ","), T, shard.ids.size(0));
  // Block 0 stays inside each document of a packed sample (one ring rank: the chunk is the
  // whole sequence, so the documents are the chunk's).
  auto block0 = opt.block0;
  if (!shard.segments.empty()) {
    EAGLET_CHECK(!opt.zigzag_layout && block0->local(),
                 "packed samples (manifest segments) need parallel.ring = 1");
    block0 = attention::segmented_block0(block0, shard.segments);
  }
  if (opt.zigzag_layout) {
    EAGLET_CHECK(opt.sp != nullptr, "the zigzag layout needs the SP group");
    in = attention::to_zigzag_layout(*opt.sp, U, T, in.tensors, shard.positions.options());
    shard = {};  // the rows as read have moved: no second copy of the shard through the step
  }
  const auto &hs = in.tensors[0], &lhs = in.tensors[2], &loss_mask = in.tensors[3];
  int64_t C = 0;
  for (int64_t n : in.runs) C += n;
  EAGLET_CHECK(C >= 1 && in.positions.size(0) == C * U,
               "positions {} for a Ulysses-gathered chunk of {} x {} rows",
               tensor_text(in.positions), C, U);
  // Step k at own row i of a run: token ids[i+k+1], target row i+k (= lhs[i+k+1]), mask row i+k.
  auto spans = [&](int64_t k) {  // rows i+k of every run, in order
    std::vector<RowSpan> out;
    int64_t start = 0;
    for (int64_t n : in.runs) {
      out.push_back({start + k, n});
      start += n + T;
    }
    return out;
  };
  auto take = [&](const at::Tensor& x, int64_t k) {
    if (in.runs.size() == 1) return x.narrow(0, k, C);
    std::vector<at::Tensor> parts;
    for (const auto& s : spans(k)) parts.push_back(x.narrow(0, s.target, s.rows));
    return at::cat(parts);
  };
  const auto dt = opt.dtype;
  const Kernels& kn = opt.kernels;

  const auto cw = in_dtype(w, dt, T, static_cast<int64_t>(in.runs.size()), kn.widen);
  // Target side of row i = lhs[i+1] (step k, position j uses row j+k), once for all steps.
  // (Across a run's end into the next run's rows is never read: step k reads rows up to n+k−1.)
  const int64_t rows = lhs.size(0);
  auto targets = target_rows(lhs.narrow(0, 1, rows - 1), target.full_head, target.draft_ids,
                             target.order, target.t2d, opt.loss_chunk, dt, kn.target_rows);
  // Row-i mask (DESIGN §4): loss_mask[i] × t2d[argmax(lhs[i+1] · Wtᵀ)]; past the shard lhs is the
  // zero row, whose logits are all 0 and whose argmax is token 0.
  auto mask_rows = loss_mask.to(at::kFloat) *
                   at::cat({targets.in_draft, target.t2d.narrow(0, 0, 1)}).to(at::kFloat);
  // N_k, step k's masked rows over the SP group, is known before the unroll: each step's loss
  // weight w_k / max(N_k, 1) goes into its fused loss's gradients as they are made.
  std::vector<at::Tensor> local_counts;
  for (int64_t k = 0; k < T; ++k) local_counts.push_back(take(mask_rows, k).sum());
  auto counts = at::stack(local_counts);  // [T]
  const bool spread = opt.sp != nullptr && opt.sp->size() > 1;
  if (spread) opt.sp->all_reduce(counts, ReduceOp::sum);
  const auto inv_counts = at::clamp_min(counts, 1.0).reciprocal();

  auto inv_freq = rope_inv_freq(cfg, hs.device());
  auto ids = in.tensors[1].clamp(0, cfg.vocab_size - 1);
  // Step 0's input fc(hs), run by run (what fc keeps for backward are views of hs, not a copy).
  std::vector<at::Tensor> fc_runs;
  for (const auto& s : spans(0))
    fc_runs.push_back(linear(hs.narrow(0, s.target, s.rows).to(dt), cw.fc.w, cw.fc.grad));
  auto h = fc_runs.size() == 1 ? fc_runs[0] : at::cat(fc_runs);
  std::vector<at::Tensor> ks, vs, sums;
  FusedLoss loss(cw.lm_head.w, opt.loss_chunk, cw.lm_head.grad, kn.soft_ce_rows, kn.scale);
  // The midlayer's weight gradients are summed over the T steps by their GEMMs (model/layers.h).
  const MlpGrads mlp_grads{cw.gate_up.grad, cw.down_proj.grad};
  at::Tensor total;
  static constexpr const char* kStepNames[] = {"ttt step 0", "ttt step 1", "ttt step 2",
                                               "ttt step 3", "ttt step 4", "ttt step 5",
                                               "ttt step 6", "ttt step 7+"};
  for (int64_t k = 0; k < T; ++k) {
    NvtxRange step_range(kStepNames[std::min<int64_t>(k, 7)]);
    auto [qkv_out, h_res] = input_projection_and_residual(
        w.embed_tokens, take(ids, k + 1), h, w.input_layernorm, w.hidden_norm, cw.qkv.w, eps,
        cw.qkv.grad, kn.input_norms, kn.rms_norm);
    // q and k stay strided views (RoPE reads them so); v is copied out so the K/V cache does not
    // keep the whole buffer alive. Ulysses (U > 1): one all-to-all scatters the q, k and v heads
    // and gathers the ring chunk's sequence ([C·U, heads/U, d]).
    auto [q, kk, v] = attention::scatter_qkv(qkv_out, nH, nKV, d, opt.ulysses);
    // RoPE after the all-to-all, with the chunk's global positions; TTT step k uses positions + k.
    auto [cos, sin] = rope_tables(inv_freq, in.positions + k);
    q = apply_rope(q, cos, sin, kn.rope);
    // The cache keeps post-all-to-all, post-RoPE keys.
    ks.push_back(apply_rope(kk, cos, sin, kn.rope));
    vs.push_back(v);
    auto a = attention::ttt_attention(q, ks, vs, block0, scale, kn.ttt_diag);
    if (U > 1) a = attention::gather_heads(a, *opt.ulysses);
    // Both residual adds happen in the GEMMs' epilogues.
    auto h1 = linear(a.reshape({C, nH * d}), cw.o_proj.w, cw.o_proj.grad, h_res);
    // Each norm's input reaches its residual consumer through the norm (rms_norm_and_residual,
    // input_projection_and_residual for h): its two gradients are summed by the norm's backward.
    auto [h1_n, h1_res] = rms_norm_and_residual(h1, w.post_norm, eps, kn.rms_norm);
    auto out = swiglu_mlp(h1_n, cw.gate_up.w, cw.down_proj.w, opt.mlp_recompute, mlp_grads, h1_res,
                          kn.swiglu);
    auto [out_n, out_res] = rms_norm_and_residual(out, w.norm, eps, kn.rms_norm);
    auto s = loss.step(out_n, targets, spans(k), take(mask_rows, k),
                       inv_counts[k] * opt.loss_weights[k], k == T - 1);
    // Connectivity (DESIGN §5): the fused loss is itself the hidden·0 term: its gradient in h
    // exists (zero on masked rows) whatever the local mask, so every rank's backward runs.
    total = total.defined() ? total + s.weighted : s.weighted;
    sums.push_back(at::stack({s.loss, s.correct}));
    h = out_res;
  }
  auto global = at::stack(sums).contiguous();  // [T, 2]: loss and correct sums
  if (spread) opt.sp->all_reduce(global, ReduceOp::sum);
  return {total, global.select(1, 0) * inv_counts, global.select(1, 1) * inv_counts, counts};
}

std::vector<double> step_weights(const TrainingConfig& t) {
  if (!t.ttt_weights.empty()) return t.ttt_weights;
  std::vector<double> w;
  for (int64_t k = 0; k < t.ttt_length; ++k)
    w.push_back(std::pow(t.ttt_decay, static_cast<double>(k)));
  return w;
}

}  // namespace eaglet::model
