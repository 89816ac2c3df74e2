// GPU (bf16) checks, tagged [gpu]: they return early with a warning on machines without CUDA.
// The fused kernels (flash, cuDNN) in the TTT merge against the reference kernel, and the whole
// TTT step in bf16 against the fp32 CPU model on the same weights and data.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/randn.h>

#include <cmath>

#include "attention/local_attention.h"
#include "attention/ttt_attention.h"
#include "catch.h"
#include "dist/device.h"
#include "torch/model_fixture.h"

using namespace eaglet;

TEST_CASE("GPU bf16: flash TTT attention equal the reference kernel within 2e-2",
          "[gpu][attention]") {
  if (cuda_device_count() == 0) {
    WARN("no CUDA device: skipped");
    return;
  }
  const c10::Device dev(c10::kCUDA, 0);
  for (int64_t d : {8, 64, 128}) {
    for (int64_t steps : {1, 3}) {
      INFO("head_dim " << d << " steps " << steps);
      auto gen = at::detail::createCPUGenerator(11);
      const int64_t S = 300, H = 8, KV = 2;
      auto f32 = at::TensorOptions().dtype(at::kFloat);
      // Inputs rounded to bf16 once, so every kernel sees the same numbers.
      auto q0 = at::randn({S, H, d}, gen, f32).to(at::kBFloat16);
      auto k0 = at::randn({steps, S, KV, d}, gen, f32).to(at::kBFloat16);
      auto v0 = at::randn({steps, S, KV, d}, gen, f32).to(at::kBFloat16);
      auto probe = at::randn({S, H, d}, gen, f32).to(dev);
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));

      auto run = [&](const std::string& kernel, at::ScalarType dtype) {
        auto q = q0.to(dev, dtype).set_requires_grad(true),
             ks = k0.to(dev, dtype).set_requires_grad(true),
             vs = v0.to(dev, dtype).set_requires_grad(true);
        auto out = attention::ttt_attention(
            q, ks.unbind(0), vs.unbind(0),
            attention::local_block0(attention::local_kernel(kernel, dev, dtype)), scale);
        (out.to(at::kFloat) * probe).sum().backward();
        return std::vector<at::Tensor>{out.detach(), q.grad(), ks.grad(), vs.grad()};
      };
      auto ref = run("reference", at::kFloat);
      for (const char* kernel : {"flash"}) {
        auto got = run(kernel, at::kBFloat16);
        const char* what[] = {"out", "dq", "dk", "dv"};
        for (size_t i = 0; i < got.size(); ++i) {
          INFO(kernel << " " << what[i] << " rel err " << test::rel_err(got[i], ref[i]));
          CHECK(test::rel_err(got[i], ref[i]) <= 2e-2);  // bf16 compute vs fp32 reference
        }
      }
    }
  }
}

TEST_CASE("GPU bf16: the TTT unroll matches the fp32 CPU model (losses 2e-2, gradients 5e-2)",
          "[gpu][model]") {
  if (cuda_device_count() == 0) {
    WARN("no CUDA device: skipped");
    return;
  }
  const c10::Device dev(c10::kCUDA, 0);
  test::Problem p = test::make_problem(/*C=*/96, /*T=*/3, 2024);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto ref = test::run_model(p, "reference", at::kFloat, 4096, weights);
  for (const char* kernel : {"auto", "flash"}) {
    test::Problem g = test::to_device(p, dev);
    auto got = test::run_model(g, kernel, at::kBFloat16, 32, weights);
    for (size_t k = 0; k < ref.step_loss.size(); ++k) {
      INFO(kernel << " step " << k << " bf16 " << got.step_loss[k] << " fp32 " << ref.step_loss[k]);
      CHECK(std::abs(got.step_loss[k] - ref.step_loss[k]) <= 2e-2 * std::abs(ref.step_loss[k]));
    }
    for (auto& [name, grad] : ref.grads) {
      INFO(kernel << " gradient of " << name << " rel err "
                  << test::rel_err(got.grads[name], grad));
      CHECK(test::rel_err(got.grads[name], grad) <= 5e-2);  // bf16 activations, fp32 masters
    }
  }
}
