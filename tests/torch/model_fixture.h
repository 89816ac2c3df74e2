// Shared fixture of the model tests: a tiny draft, random weights and data, and one call that
// runs the TTT forward + backward and returns per-step losses and gradients.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <c10/core/GradMode.h>

#include <map>
#include <string>
#include <vector>

#include "attention/local_attention.h"
#include "attention/ttt_attention.h"
#include "dist/device.h"
#include "model/eagle3.h"
#include "model/vocab.h"

namespace eaglet::test {
using namespace eaglet::model;

inline DraftArchConfig tiny_config() {
  DraftArchConfig c;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.vocab_size = 50;
  c.draft_vocab_size = 20;
  c.target_hidden_size = 24;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  return c;
}

struct Problem {
  DraftArchConfig cfg;
  Eagle3Weights w;
  LossTarget target;
  ShardInput in;
  VocabMap vocab;
  int64_t T;
};

// Random weights (norm weights perturbed away from 1 so their gradients are exercised), random
// data of length C + T, a loss mask with zeros, a vocabulary from random counts.
inline Problem make_problem(int64_t C, int64_t T, uint64_t seed) {
  Problem p;
  p.cfg = tiny_config();
  p.T = T;
  auto gen = at::detail::createCPUGenerator(seed);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  p.w = init_weights(p.cfg, static_cast<int64_t>(seed), c10::kCPU);
  for (auto& [name, t] : p.w.trainable()) {
    c10::NoGradGuard no_grad;
    if (name.find("norm") != std::string::npos)
      t->add_(at::randn(t->sizes(), gen, f32) * 0.1);
    else
      t->mul_(5.0);  // larger than init so attention is not uniform
  }
  const int64_t n = C + T, vt = p.cfg.vocab_size, ht = p.cfg.target_hidden_size;
  auto counts = at::randint(0, 100, {vt}, gen, at::TensorOptions().dtype(at::kLong));
  p.vocab = vocab_from_counts(counts, p.cfg.draft_vocab_size);
  p.target = loss_target(at::randn({vt, ht}, gen, f32), p.vocab, c10::kCPU);
  p.in.hs = at::randn({n, 3 * ht}, gen, f32);
  p.in.lhs = at::randn({n, ht}, gen, f32);
  p.in.ids = at::randint(0, vt, {n}, gen, at::TensorOptions().dtype(at::kLong));
  p.in.loss_mask = (at::randn({n}, gen, f32) > -0.8).to(at::kFloat);
  p.in.positions = at::arange(C, at::TensorOptions().dtype(at::kLong));
  return p;
}

inline double rel_err(const at::Tensor& got, const at::Tensor& want) {
  auto g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  double scale = std::max(at::abs(w).max().item<double>(), 1e-30);
  return at::abs(g - w).max().item<double>() / scale;
}

// Model losses and gradients for one problem through the given local attention kernel and dtype,
// with eaglet's own kernels as a run on that device would choose them (choose_kernels).
struct ModelRun {
  std::vector<double> step_loss;
  std::map<std::string, at::Tensor> grads;
  double total;
};

inline ModelRun run_model(Problem& p, const std::string& kernel, at::ScalarType dtype,
                          int64_t chunk, const std::vector<double>& weights,
                          MlpRecompute recompute = MlpRecompute::none) {
  for (auto& [name, t] : p.w.trainable()) t->mutable_grad() = at::Tensor();
  TttOptions opt;
  opt.ttt_length = p.T;
  opt.dtype = dtype;
  opt.block0 = attention::local_block0(attention::local_kernel(kernel, p.in.ids.device(), dtype));
  opt.loss_chunk = chunk;
  opt.mlp_recompute = recompute;
  opt.loss_weights = weights;
  opt.kernels = choose_kernels(p.in.ids.device(), dtype);
  auto obj = ttt_forward(p.w, p.cfg, p.target, p.in, opt);
  obj.total.backward();
  ModelRun r;
  for (int64_t k = 0; k < p.T; ++k) r.step_loss.push_back(obj.loss_k[k].item<double>());
  for (auto& [name, t] : p.w.trainable()) r.grads[name] = t->grad().clone();
  r.total = obj.total.item<double>();
  return r;
}

// The same problem on another device (fresh leaves there).
inline Problem to_device(const Problem& p, c10::Device dev) {
  Problem q = p;
  for (size_t i = 0; i < q.w.trainable().size(); ++i)
    *q.w.trainable()[i].second =
        p.w.trainable()[i].second->detach().to(dev).set_requires_grad(true);
  q.w.embed_tokens = p.w.embed_tokens.to(dev);
  q.target = loss_target(p.target.full_head, p.vocab, dev);
  q.in = {p.in.hs.to(dev), p.in.ids.to(dev), p.in.lhs.to(dev), p.in.loss_mask.to(dev),
          p.in.positions.to(dev)};
  return q;
}

}  // namespace eaglet::test
