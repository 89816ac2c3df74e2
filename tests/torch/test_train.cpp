// Optimizer step and schedule: AdamW against the textbook update, the schedule's known values,
// skipping non-finite steps (checkpoints: test_checkpoint.cpp).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sqrt.h>

#include <cmath>

#include "catch.h"
#include "core/error.h"
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
