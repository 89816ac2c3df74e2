// verify-usp: the same sample and weights through USP and through one rank, compared.
#include "train/verify_usp.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <mpi.h>

#include "attention/ring.h"
#include "core/error.h"
#include "data/sharding.h"
#include "model/eagle3.h"
#include "model/vocab.h"

namespace eaglet::train {
namespace {

// This rank's shard through the data path's own helpers (DESIGN §2-3): rows, halo, tail padding,
// loss mask and the Ulysses-gathered ring-chunk positions.
model::ShardInput make_shard(const data::FullSample& s, const std::vector<uint8_t>& mask, int64_t P,
                             int64_t T, int64_t sp_rank, int64_t U, int64_t g, c10::Device device) {
  const int64_t L = s.ids.size(0);
  const auto geom = data::shard_geometry(L, L, P, T);
  auto t = data::slice_shard(s, geom, sp_rank);
  return {t.hs.to(device), t.ids.to(device), t.lhs.to(device),
          data::shard_loss_mask(mask, geom, sp_rank).to(device),
          data::ring_chunk_positions(geom, U, g).to(device)};
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  auto g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  return at::abs(g - w).max().item<double>() / std::max(at::abs(w).max().item<double>(), 1e-30);
}

}  // namespace

at::ScalarType compute_dtype(const std::string& name, c10::Device device) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float64") return at::kDouble;
  return device.is_cuda() ? at::kBFloat16 : at::kFloat;
}

VerifyResult verify_usp(const Config& cfg, const ProcessGroups& groups, const VerifyOptions& opt) {
  const auto& arch = cfg.model.config;
  const auto device = groups.device();
  const auto dtype = compute_dtype(cfg.runtime.dtype, device);
  const int64_t T = cfg.training.ttt_length, P = groups.layout().sp(), U = groups.layout().ulysses;
  const int64_t S = opt.seq_len > 0 ? opt.seq_len : cfg.data.max_seq_length;
  const int64_t L = std::min(S, cfg.data.max_seq_length);
  EAGLET_CHECK(
      L > T, "verify-usp: sequence of {} tokens must be longer than training.ttt_length {}", L, T);

  // The same sample, target head and weights on every rank (seeded CPU generator).
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(opt.seed));
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t vt = arch.vocab_size, ht = arch.target_hidden_size;
  data::FullSample sample{
      at::randn({L, 3 * ht}, gen, f32), at::randint(0, vt, {L}, gen, f32.dtype(at::kLong)),
      at::randn({L, ht}, gen, f32), (at::randn({L}, gen, f32) > -0.5).to(at::kFloat)};
  if (opt.loss_in_last_shard) {
    const int64_t C = (L + P - 1) / P;
    sample.loss_mask.zero_();
    if ((P - 1) * C < L) sample.loss_mask.narrow(0, (P - 1) * C, L - (P - 1) * C).fill_(1.0);
  }
  // Compute-dtype copies of the stored hidden states (the store holds bf16).
  sample.hs = sample.hs.to(at::kBFloat16).to(at::kFloat);
  sample.lhs = sample.lhs.to(at::kBFloat16).to(at::kFloat);
  auto counts = at::randint(0, 1000, {vt}, gen, f32.dtype(at::kLong));
  auto vocab = model::vocab_from_counts(counts, arch.draft_vocab_size);
  auto full_head = at::randn({vt, ht}, gen, f32);
  auto target = model::loss_target(full_head, vocab, device);
  auto weights = model::init_weights(arch, cfg.training.seed, device);
  const auto step_w = model::step_weights(cfg.training);
  const auto& kernel = attention::local_kernel(cfg.model.attention, device, dtype);

  auto run = [&](const model::ShardInput& in, Communicator* ulysses, Communicator* ring,
                 Communicator* sp) {
    for (auto& [name, t] : weights.trainable()) t->mutable_grad() = at::Tensor();
    model::TttOptions o;
    o.ttt_length = T;
    o.dtype = dtype;
    o.ulysses = ulysses;
    const auto balance = attention::ring_balance(cfg.parallel.ring_balance, U);
    o.block0 = ring != nullptr ? attention::ring_block0(*ring, kernel, balance)
                               : attention::local_block0(kernel);
    o.zigzag_layout =
        ring != nullptr && ring->size() > 1 && balance == attention::RingBalance::zigzag_layout;
    o.loss_chunk = cfg.model.loss_chunk;
    o.loss_weights = step_w;
    o.sp = sp;
    auto obj = model::ttt_forward(weights, arch, target, in, o);
    obj.total.backward();
    std::vector<at::Tensor> grads;
    for (auto& [name, t] : weights.trainable()) grads.push_back(t->grad().detach().clone());
    return std::make_pair(obj.loss_k.detach().clone(), grads);
  };

  // USP: this rank's shard through the configured layout; gradients summed over the SP group.
  const auto& c = groups.coord();
  std::vector<uint8_t> mask(L);
  for (int64_t i = 0; i < L; ++i) mask[i] = sample.loss_mask[i].item<float>() > 0.5f;
  auto usp_in = make_shard(sample, mask, P, T, c.sp, U, c.ring, device);
  auto [usp_loss, usp_grads] = run(usp_in, &groups.group(GroupKind::ulysses),
                                   &groups.group(GroupKind::ring), &groups.group(GroupKind::sp));
  for (auto& g : usp_grads) groups.group(GroupKind::sp).all_reduce(g, ReduceOp::sum);

  // Reference: the whole sample on this rank alone (P = 1).
  auto ref_in = make_shard(sample, mask, 1, T, 0, 1, 0, device);
  auto [ref_loss, ref_grads] = run(ref_in, nullptr, nullptr, nullptr);

  VerifyResult r;
  const bool fp32 = dtype == at::kFloat || dtype == at::kDouble;
  r.tol_loss = opt.tol_loss > 0 ? opt.tol_loss : (fp32 ? 1e-5 : 2e-2);
  r.tol_grad = opt.tol_grad > 0 ? opt.tol_grad : (fp32 ? 1e-5 : 3e-2);
  double local[2] = {rel_err(usp_loss, ref_loss), 0.0};
  for (size_t i = 0; i < usp_grads.size(); ++i)
    local[1] = std::max(local[1], rel_err(usp_grads[i], ref_grads[i]));
  double worst[2];
  MPI_Allreduce(local, worst, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  r.max_rel_loss = worst[0];
  r.max_rel_grad = worst[1];
  r.pass = r.max_rel_loss <= r.tol_loss && r.max_rel_grad <= r.tol_grad;
  return r;
}

}  // namespace eaglet::train
