// verify-usp: samples through the training step's own assembly on the configured layout, against
// the independent fp64 dense reference of the whole samples on one rank.
#include "train/verify_usp.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/tensor_compare.h"
#include "data/sharding.h"
#include "model/eagle3.h"
#include "model/reference.h"
#include "model/vocab.h"
#include "train/optimizer.h"
#include "train/step.h"

namespace eaglet::train {
namespace {

// This rank's shard through the data path's own helpers (DESIGN §2-3): rows, halo, tail padding,
// loss mask and the Ulysses-gathered ring-chunk positions.
// A packed sample's documents (data::pack_documents) when `documents` is not empty.
data::ShardInput make_shard(const data::FullSample& s, int64_t P, int64_t T, int64_t sp_rank,
                            int64_t U, int64_t g, c10::Device device,
                            const std::vector<int64_t>& documents = {}) {
  const int64_t L = s.ids.size(0);
  std::vector<uint8_t> mask(L);
  auto m = s.loss_mask.contiguous();
  for (int64_t i = 0; i < L; ++i) mask[i] = m.data_ptr<float>()[i] > 0.5f;
  const auto geom = data::shard_geometry(L, L, P, T);
  auto t = data::slice_shard(s, geom, sp_rank);
  data::ShardInput in{t.hs, t.ids, t.lhs, data::shard_loss_mask(mask, geom, sp_rank),
                      data::ring_chunk_positions(geom, U, g)};
  if (!documents.empty()) data::pack_documents(in, documents, geom, sp_rank);
  for (auto* x : {&in.hs, &in.ids, &in.lhs, &in.loss_mask, &in.positions}) *x = x->to(device);
  return in;
}

// Rows [start, start + n) of a sample: one document of a packed one.
data::FullSample document(const data::FullSample& s, int64_t start, int64_t n) {
  return {s.hs.narrow(0, start, n), s.ids.narrow(0, start, n), s.lhs.narrow(0, start, n),
          s.loss_mask.narrow(0, start, n)};
}

}  // namespace

VerifyResult verify_usp(const Config& cfg, const ProcessGroups& groups, const VerifyOptions& opt) {
  const auto& arch = cfg.model.config;
  const TrainStep step(cfg, groups);  // exactly what eaglet train assembles from this config
  const auto device = step.device();
  const auto dtype = step.dtype();
  const auto& layout = groups.layout();
  const auto& c = groups.coord();
  const int64_t T = cfg.training.ttt_length, P = layout.sp(), U = layout.ulysses;
  const int64_t D = layout.dp(), A = step.grad_accum(), N = D * A;
  const int64_t S = opt.seq_len > 0 ? opt.seq_len : cfg.data.max_seq_length;
  const int64_t L = std::min(S, cfg.data.max_seq_length);
  EAGLET_CHECK(
      L > T, "verify-usp: sequence of {} tokens must be longer than training.ttt_length {}", L, T);

  // The same N = D x grad_accum samples, target head and weights on every rank (seeded CPU
  // generator). Sample j is micro-batch j / D of replica j % D, as the trainer's stream deals them.
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(opt.seed));
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t vt = arch.vocab_size, ht = arch.target_hidden_size;
  auto counts = at::randint(0, 1000, {vt}, gen, f32.dtype(at::kLong));
  auto vocab = model::vocab_from_counts(counts, arch.draft_vocab_size);
  // The target head in the compute dtype, as the trainer keeps it.
  auto target = model::loss_target(at::randn({vt, ht}, gen, f32).to(dtype), vocab, device);
  std::vector<data::FullSample> samples;
  std::vector<std::vector<int64_t>> documents;  // per sample
  const bool packed = opt.documents > 1;
  for (int64_t j = 0; j < N; ++j) {
    // The store holds bf16 hidden states: both sides see the same bf16-exact values.
    data::FullSample s{at::randn({L, arch.num_aux_hidden_states * ht}, gen, f32).to(at::kBFloat16).to(at::kFloat),
                       at::randint(0, vt, {L}, gen, f32.dtype(at::kLong)),
                       at::randn({L, ht}, gen, f32).to(at::kBFloat16).to(at::kFloat),
                       (at::randn({L}, gen, f32) > -0.5).to(at::kFloat)};
    if (opt.loss_in_last_shard) {
      const int64_t C = (L + P - 1) / P;
      s.loss_mask.zero_();
      if ((P - 1) * C < L) s.loss_mask.narrow(0, (P - 1) * C, L - (P - 1) * C).fill_(1.0);
    }
    samples.push_back(std::move(s));
    // Document lengths: documents − 1 distinct cut points in [1, L), seeded.
    std::vector<int64_t> docs{L};
    if (opt.documents > 1) {
      EAGLET_CHECK(opt.documents <= L, "verify-usp: {} documents in a {}-token sample",
                   opt.documents, L);
      auto cuts = at::randperm(L - 1, gen, f32.dtype(at::kLong)).narrow(0, 0, opt.documents - 1);
      cuts = std::get<0>(cuts.sort()) + 1;
      docs.clear();
      int64_t prev = 0;
      for (int64_t i = 0; i < opt.documents - 1; ++i) {
        docs.push_back(cuts[i].item<int64_t>() - prev);
        prev = cuts[i].item<int64_t>();
      }
      docs.push_back(L - prev);
    }
    documents.push_back(docs);
  }
  auto weights = model::init_weights(arch, cfg.training.seed, device);
  weights.embed_tokens = weights.embed_tokens.to(dtype);  // as the trainer keeps it
  AdamW optimizer(weights.trainable(), cfg.training);

  // USP: this replica's micro-batches through the training step, then its gradient sync.
  auto losses = at::zeros({N, T}, at::TensorOptions().dtype(at::kDouble));
  for (int64_t a = 0; a < A; ++a) {
    const int64_t j = c.dp + D * a;
    auto obj =
        step.micro_batch(weights, target,
                         make_shard(samples[j], P, T, c.sp, U, c.ring, device,
                                    packed ? documents[j] : std::vector<int64_t>{}));
    losses[j].copy_(obj.loss_k.detach().to(at::kDouble).cpu());
  }
  step.sync_gradients(optimizer);
  // Every replica's losses on every rank (each DP group holds one rank per replica).
  groups.host_group(GroupKind::dp).all_reduce(losses, ReduceOp::sum);

  // On world rank 0: the fp64 dense unroll of every whole sample with the same weights, the
  // objective averaged over the N samples as the step's normalisation says. fp32 is judged
  // against it. bf16 carries its own rounding (a few 1e-2 of a gradient's scale against fp64 on
  // realistic shapes), so bf16 is judged, as DESIGN §5 defines, against the same step on one rank
  // in bf16 (TrainStep::Scope::single_rank: the same kernels and roundings, all N samples
  // accumulated), and against fp64 only for gross errors (max-normalised 1e-1).
  VerifyResult r;
  const bool fp32 = dtype == at::kFloat || dtype == at::kDouble;
  r.against = fp32 ? "the fp64 dense reference" : "one rank in the same dtype";
  r.tol_loss = opt.tol_loss > 0 ? opt.tol_loss : (fp32 ? 1e-5 : 2e-2);
  r.tol_grad = opt.tol_grad > 0 ? opt.tol_grad : (fp32 ? 1e-5 : 3e-2);
  // Per row: fp32 round-off against the fp64 reference reaches ~1.5e-5 in rows of small entries
  // (8 ranks, every loss token in the last shard); a wrong region is off by far more.
  r.tol_row = opt.tol_row > 0 ? opt.tol_row : (fp32 ? 1e-4 : 1e-1);
  r.tol_fp64 = fp32 ? r.tol_grad : 1e-1;
  auto errors = at::zeros({9}, at::TensorOptions().dtype(at::kDouble));
  if (groups.world_rank() == 0) {
    std::vector<at::Tensor> usp_grads;
    for (const auto& [name, t] : weights.trainable()) usp_grads.push_back(t->grad().clone());
    auto w64 = model::fp64_leaves(weights);
    const auto step_w = model::step_weights(cfg.training);
    at::Tensor total;
    std::vector<at::Tensor> ref_losses;
    for (int64_t j = 0; j < N; ++j) {
      // Each document alone (a packed sample's documents see nothing of each other), the step
      // sums over the sample's joint counts (DESIGN §4: one sample, one normalisation).
      std::vector<model::ReferenceResult> refs;
      int64_t start = 0;
      for (int64_t n : documents[j]) {
        refs.push_back(model::reference_unroll(arch, w64, weights.embed_tokens, target,
                                               make_shard(document(samples[j], start, n), 1, T,
                                                          0, 1, 0, device),
                                               T, step_w));
        start += n;
      }
      std::vector<double> loss_k(T);
      for (int64_t k = 0; k < T; ++k) {
        double count = 0;
        for (const auto& ref : refs) count += ref.count_k[k];
        count = std::max(count, 1.0);
        at::Tensor sum;
        for (const auto& ref : refs) sum = sum.defined() ? sum + ref.sum_k[k] : ref.sum_k[k];
        loss_k[k] = sum.item<double>() / count;
        auto term = sum * (step_w[k] / count / static_cast<double>(N));
        total = total.defined() ? total + term : term;
      }
      ref_losses.push_back(at::tensor(loss_k, at::TensorOptions().dtype(at::kDouble)));
    }
    total.backward();
    auto want_losses = at::stack(ref_losses);
    std::vector<at::Tensor> want;
    for (const auto& [name, t] : weights.trainable()) want.push_back(w64.at(name).grad());
    TensorError fp64_err;
    for (size_t i = 0; i < want.size(); ++i)
      fp64_err = worse(fp64_err, tensor_error(usp_grads[i], want[i]));
    if (!fp32) {
      const TrainStep solo(cfg, groups, TrainStep::Scope::single_rank);
      for (auto& [name, t] : weights.trainable()) t->mutable_grad() = at::Tensor();
      for (int64_t j = 0; j < N; ++j) {
        auto obj = solo.micro_batch(weights, target,
                                    make_shard(samples[j], 1, T, 0, 1, 0, device,
                                               packed ? documents[j] : std::vector<int64_t>{}));
        want_losses[j].copy_(obj.loss_k.detach().to(at::kDouble).cpu());
      }
      want.clear();
      for (const auto& [name, t] : weights.trainable()) want.push_back(t->grad());
    }
    const auto loss_err = tensor_error(losses, want_losses);
    TensorError grad_err;
    size_t i = 0;
    for (const auto& [name, t] : weights.trainable()) {
      const auto e = tensor_error(usp_grads[i], want[i]);
      spdlog::info("verify-usp: {} against {}: {}", name, r.against, e.text());
      if (e.worst() >= grad_err.worst()) r.worst_grad = name;
      grad_err = worse(grad_err, e);
      ++i;
    }
    errors =
        at::tensor({loss_err.max_norm, loss_err.row, loss_err.nmse, grad_err.max_norm, grad_err.row,
                    grad_err.nmse, fp64_err.max_norm, fp64_err.row, fp64_err.nmse},
                   at::TensorOptions().dtype(at::kDouble));
  }
  auto& world = groups.host_group(GroupKind::world);
  world.all_reduce(errors, ReduceOp::sum);  // rank 0's values on every rank
  auto e = errors.accessor<double, 1>();
  r.loss = {e[0], e[2], e[1]};
  r.grad = {e[3], e[5], e[4]};
  r.fp64 = {e[6], e[8], e[7]};
  r.max_rel_loss = r.loss.worst();
  r.max_rel_grad = r.grad.worst();
  r.pass = r.loss.within(r.tol_loss, std::max(r.tol_loss, r.tol_row)) &&
           r.grad.within(r.tol_grad, std::max(r.tol_grad, r.tol_row)) &&
           r.fp64.max_norm <= r.tol_fp64;
  r.samples = N;
  return r;
}

}  // namespace eaglet::train
