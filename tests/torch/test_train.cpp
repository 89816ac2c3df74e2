// Optimizer step and schedule: AdamW against the textbook update, the schedule's known values,
// skipping non-finite steps, the masters' gradient buffer over micro-batches and steps
// (checkpoints: test_checkpoint.cpp).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sqrt.h>

#include <cmath>

#include "catch.h"
#include "core/error.h"
#include "dist/device.h"
#include "torch/model_fixture.h"
#include "train/optimizer.h"

using namespace eaglet;

TEST_CASE("learning rate: linear warm-up then cosine to min_lr", "[train]") {
  TrainingConfig t;
  t.lr = 1.0;
  t.min_lr = 0.1;
  t.warmup_ratio = 0.1;  // 20 steps -> 2 warm-up steps
  CHECK(train::learning_rate(t, 0, 20) == 0.5);
  CHECK(train::learning_rate(t, 1, 20) == 1.0);
  CHECK(train::learning_rate(t, 2, 20) == 1.0);  // cosine starts at the peak
  CHECK(std::abs(train::learning_rate(t, 11, 20) - (0.1 + 0.45 * (1 + std::cos(M_PI * 0.5)))) <
        1e-12);
  CHECK(std::abs(train::learning_rate(t, 20, 20) - 0.1) < 1e-12);
  t.warmup_ratio = 0;
  CHECK(train::learning_rate(t, 0, 20) == 1.0);
}

TEST_CASE("AdamW with clipping equals the textbook update (fp32, rel 1e-6)", "[train]") {
  auto gen = at::detail::createCPUGenerator(3);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor a = at::randn({5, 4}, gen, f32), b = at::randn({7}, gen, f32);
  TrainingConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.max_grad_norm = 0.5;
  train::AdamW opt({{"a", &a}, {"b", &b}}, cfg);
  // reference state
  std::vector<at::Tensor> p{a.clone(), b.clone()}, m{at::zeros_like(a), at::zeros_like(b)},
      v{m[0].clone(), m[1].clone()};
  for (int step = 1; step <= 3; ++step) {
    std::vector<at::Tensor> g{at::randn({5, 4}, gen, f32), at::randn({7}, gen, f32)};
    a.mutable_grad() = g[0].clone();
    b.mutable_grad() = g[1].clone();
    const double lr = 0.01 * step;
    auto stats = opt.step(lr);
    double norm = std::sqrt(g[0].pow(2).sum().item<double>() + g[1].pow(2).sum().item<double>());
    CHECK(std::abs(stats.grad_norm - norm) <= 1e-6 * norm);
    double clip = norm > 0.5 ? 0.5 / (norm + 1e-6) : 1.0;
    for (int i = 0; i < 2; ++i) {
      auto gi = g[i] * clip;
      p[i] = p[i] * (1 - lr * 0.1);
      m[i] = m[i] * 0.9 + gi * 0.1;
      v[i] = v[i] * 0.999 + gi * gi * 0.001;
      auto mhat = m[i] / (1 - std::pow(0.9, step)), vhat = v[i] / (1 - std::pow(0.999, step));
      p[i] = p[i] - lr * mhat / (at::sqrt(vhat) + 1e-8);
    }
    CHECK(test::rel_err(a, p[0]) <= 1e-6);
    CHECK(test::rel_err(b, p[1]) <= 1e-6);
  }
  CHECK(opt.steps_taken() == 3);
}

TEST_CASE("a non-finite gradient norm skips the step; ten in a row stop the run", "[train]") {
  at::Tensor a = at::zeros({3}, at::TensorOptions().dtype(at::kFloat));
  train::AdamW opt({{"a", &a}}, TrainingConfig{});
  for (int i = 0; i < 9; ++i) {
    a.mutable_grad() = at::full({3}, NAN, a.options());
    auto s = opt.step(0.1);
    CHECK(s.skipped);
    CHECK(at::equal(a, at::zeros({3}, a.options())));
  }
  // The skip happens on the device (the fused kernel's found_inf): moments and step count stay.
  for (const auto& [key, t] : opt.state()) {
    INFO(key);
    CHECK(at::equal(t, at::zeros_like(t)));
  }
  CHECK(opt.steps_taken() == 0);
  a.mutable_grad() = at::full({3}, INFINITY, a.options());
  CHECK_THROWS_AS(opt.step(0.1), Error);
  CHECK(opt.skipped_total() == 10);
}

namespace {
// The unroll's forward and backward on `in` with the problem's weights: the training path's
// options (kernels as the device chooses), unit_upstream as TrainStep sets it where `unit`.
void micro_batch(test::Problem& p, const data::ShardInput& in, at::ScalarType dtype, bool unit) {
  model::TttOptions opt;
  opt.ttt_length = p.T;
  opt.dtype = dtype;
  opt.block0 = attention::local_block0(attention::local_kernel("reference", c10::kCPU, dtype));
  opt.loss_chunk = 4;
  opt.loss_weights = {0.5, 0.4, 0.32};  // the accumulation's 1/2 in each
  opt.kernels = choose_kernels(c10::kCPU, dtype);
  opt.unit_upstream = unit;
  model::ttt_forward(p.w, p.cfg, p.target, in, opt).total.backward();
}
}  // namespace

TEST_CASE(
    "gradient buffer: micro-batches accumulate in the masters' flat buffer and each optimizer "
    "step starts afresh (fp32 and bf16 unroll against autograd's own accumulation, rel 1e-5)",
    "[train]") {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO("compute dtype " << c10::toString(dtype));
    auto p = test::make_problem(/*C=*/9, /*T=*/3, 41);
    const auto b = test::make_problem(9, 3, 42).in, c = test::make_problem(9, 3, 43).in;
    // Reference: no buffer, autograd sets and sums .grad; the loss scales by its upstream 1.
    auto reference = [&](const std::vector<data::ShardInput>& batches) {
      for (auto& [name, t] : p.w.trainable()) t->mutable_grad() = at::Tensor();
      for (const auto& in : batches) micro_batch(p, in, dtype, false);
      std::vector<at::Tensor> g;
      for (auto& [name, t] : p.w.trainable()) g.push_back(t->grad().clone());
      return g;
    };
    const auto want_ab = reference({p.in, b}), want_c = reference({c});

    train::AdamW optimizer(p.w.trainable(), TrainingConfig{});
    p.w.grads = optimizer.gradients();
    const auto& flat = p.w.grads->flat();
    auto check = [&](const std::vector<at::Tensor>& want, const char* what) {
      optimizer.sync_gradients(nullptr, 1);
      size_t i = 0;
      for (auto& [name, t] : p.w.trainable()) {
        INFO(what << ": " << name);
        // Still a view of the buffer (the sync reduces the buffer: nothing may have replaced it).
        CHECK(t->grad().storage().is_alias_of(flat.storage()));
        CHECK(test::rel_err(t->grad(), want[i++]) <= 1e-5);
      }
    };
    micro_batch(p, p.in, dtype, true);
    micro_batch(p, b, dtype, true);
    check(want_ab, "two micro-batches");
    optimizer.zero_grad();  // the next step: its first writes overwrite, nothing of a and b left
    micro_batch(p, c, dtype, true);
    check(want_c, "the next step");
  }
}
