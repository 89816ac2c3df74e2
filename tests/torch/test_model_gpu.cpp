// GPU (bf16) checks, tagged [gpu]: each fails without a CUDA device (main.cpp skips the run).
// The fused kernels (flash, cuDNN) in the TTT merge against the reference kernel, and the whole
// TTT step in bf16 against the fp32 CPU model on the same weights and data.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include <tuple>
#include <ATen/ops/randperm.h>
#include <ATen/ops/zeros.h>

#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <tuple>
#include <utility>
#include <vector>

#include "attention/local_attention.h"
#include "attention/ttt_attention.h"
#include "attention/ttt_diag.h"
#include "catch.h"
#include "dist/device.h"
#include "model/layers.h"
#include "model/loss.h"
#include "model/recompute.h"
#include "model/soft_ce_rows.h"
#include "torch/model_fixture.h"
#include "train/optimizer.h"

using namespace eaglet;

namespace {
// Without a device a [gpu] case fails: none passes unrun. A run of [gpu] cases only exits 77
// (skipped) before any case starts where no device is visible (tests/torch/main.cpp).
void require_cuda() {
  if (cuda_device_count() == 0) FAIL("no CUDA device: [gpu] cases need one (\"~[gpu]\": the rest)");
}
}  // namespace

TEST_CASE("GPU: the kernel tables pick eaglet's own CUDA kernels for bf16/fp16 on the GPU",
          "[gpu]") {
  // Guards the "fused vs reference" tests below: were the fused entries never taken, they would
  // compare the reference with itself.
  require_cuda();
  auto on = at::TensorOptions().device(c10::Device(c10::kCUDA, 0));
  auto bf16 = at::zeros({8}, on.dtype(at::kBFloat16)), f16 = at::zeros({8}, on.dtype(at::kHalf));
  const auto fused = Kernels::all(Impl::fused), reference = Kernels::all(Impl::reference);
  CHECK(choose_kernels(bf16.device(), at::kBFloat16) == fused);
  CHECK(choose_kernels(f16.device(), at::kHalf) == fused);
  CHECK(use_fused(Impl::fused, bf16, "test"));
  CHECK_FALSE(use_fused(Impl::reference, bf16, "test"));
  CHECK(choose_kernels(bf16.device(), at::kFloat) == reference);
  CHECK(choose_kernels(c10::Device(c10::kCPU), at::kBFloat16) == reference);
  CHECK_THROWS(use_fused(Impl::fused, at::zeros({8}, on.dtype(at::kFloat)), "test"));
}

// S = 300 is off cuDNN's 256-row bucket (the tail padding of local_attention.cpp), 512 on it;
// `packed`: block 0 over three documents (segmented_block0), each kernel on strided row ranges.
TEST_CASE("GPU bf16: flash TTT attention equal the reference kernel within 2e-2",
          "[gpu][attention]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  for (auto [d, S, packed] : {std::tuple<int64_t, int64_t, bool>{8, 300, false}, {64, 300, false},
                              {128, 300, false}, {128, 512, false}, {64, 300, true},
                              {128, 512, true}}) {
    for (int64_t steps : {1, 3}) {
      INFO("head_dim " << d << " S " << S << " packed " << packed << " steps " << steps);
      auto gen = at::detail::createCPUGenerator(11);
      const int64_t H = 8, KV = 2;
      const std::vector<int64_t> docs =
          S == 300 ? std::vector<int64_t>{100, 57, 143} : std::vector<int64_t>{256, 1, 255};
      auto block0 = [&](const attention::LocalKernel& k) {
        auto b = attention::local_block0(k);
        return packed ? attention::segmented_block0(b, docs) : b;
      };
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
            block0(attention::local_kernel(kernel, dev, dtype)), scale,
            choose_kernels(dev, dtype).ttt_diag);
        (out.to(at::kFloat) * probe).sum().backward();
        return std::vector<at::Tensor>{out.detach(), q.grad(), ks.grad(), vs.grad()};
      };
      auto ref = run("reference", at::kFloat);
      for (const char* kernel : {"flash", "cudnn"}) {
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
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  test::Problem p = test::make_problem(/*C=*/96, /*T=*/3, 2024);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto ref = test::run_model(p, "reference", at::kFloat, 4096, weights);
  for (const char* kernel : {"auto", "flash", "cudnn"}) {
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

TEST_CASE("GPU: the fused loss-rows kernel equals the ATen reference on the same inputs",
          "[gpu][loss]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(5);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // 7: one element per load; the others 8-element packs (40000: rows longer than L2's share).
    for (int64_t vocab : {7, 1000, 32000, 40000}) {
      INFO("dtype " << c10::toString(dtype) << " vocab " << vocab);
      const int64_t n = 37;
      auto z0 = (at::randn({n, vocab}, gen, f32) * 3).to(dev, dtype);
      // Every head row is a draft token here.
      auto ids = at::arange(vocab, at::TensorOptions().dtype(at::kLong).device(dev));
      auto t2d = at::ones({vocab}, at::TensorOptions().dtype(at::kBool).device(dev));
      auto target = model::target_rows((at::randn({n, 16}, gen, f32)).to(dev, dtype),
                                       (at::randn({vocab, 16}, gen, f32)).to(dev, dtype), ids,
                                       model::draft_order(ids), t2d, 16, dtype);
      auto mask = (at::randn({n}, gen, f32) > 0).to(at::kFloat).to(dev);
      auto z_ref = z0.clone(), z_got = z0.clone();
      auto ref = model::soft_ce_rows(z_ref, target.logits, target.lse, mask, Impl::reference);
      auto got = model::soft_ce_rows(z_got, target.logits, target.lse, mask, Impl::fused);
      // fp32 sums in another order: 1e-5 of the row loss; dz within one bf16/fp16 rounding.
      INFO("loss rel err " << test::rel_err(got.loss, ref.loss) << ", dz rel err "
                           << test::rel_err(z_got, z_ref));
      CHECK(test::rel_err(got.loss, ref.loss) <= 1e-5);
      CHECK(test::rel_err(z_got, z_ref) <= 1e-2);
      CHECK(at::equal(got.argmax, ref.argmax));
    }
  }
}

TEST_CASE("GPU: the fused TTT diagonal kernels equal the ATen reference on the same inputs",
          "[gpu][attention]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(9);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  // Query heads per KV head: 4 (the reference model), 1, 3 (not a power of two: a guarded
  // instance), 8 (the most one warp holds).
  const std::vector<std::pair<int64_t, int64_t>> heads{{8, 2}, {4, 4}, {6, 2}, {16, 2}};
  for (int64_t d : {8, 72, 128}) {
    for (int64_t blocks : {1, 4}) {
      for (auto [H, KV] : heads) {
        INFO("head_dim " << d << " diagonal blocks " << blocks << " heads " << H << "/" << KV);
        const int64_t S = 257;
        auto bf = [&](std::vector<int64_t> shape) {
          return at::randn(shape, gen, f32).to(dev, at::kBFloat16);
        };
        auto q = bf({S, H, d}), out0 = bf({S, H, d}), dout = bf({S, H, d});
        auto lse0 = at::randn({S, H}, gen, f32).to(dev);
        std::vector<at::Tensor> ks, vs;
        for (int64_t m = 0; m < blocks; ++m) {
          ks.push_back(bf({S, KV, d}));
          vs.push_back(bf({S, KV, d}));
        }
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        auto ref = attention::diag_merge_forward(q, out0, lse0, ks, vs, scale, Impl::reference);
        auto got = attention::diag_merge_forward(q, out0, lse0, ks, vs, scale, Impl::fused);
        // Same fp32 arithmetic in another order; outputs rounded to bf16 once (rel 2^-8).
        INFO("out " << test::rel_err(got.out, ref.out) << " lse "
                    << test::rel_err(got.lse, ref.lse));
        CHECK(test::rel_err(got.out, ref.out) <= 8e-3);
        CHECK(test::rel_err(got.lse, ref.lse) <= 1e-5);
        // Block 0's dq in a head-major layout (as cuDNN may leave it): read through its strides.
        auto dq0 = bf({H, S, d}).transpose(0, 1);
        auto g_ref = attention::diag_backward(dout, q, ref.out, ref.lse, ks, vs, dq0, scale,
                                              Impl::reference);
        auto g_got =
            attention::diag_backward(dout, q, ref.out, ref.lse, ks, vs, dq0, scale, Impl::fused);
        // dq: fp32 sums on both sides, each rounded to bf16 once (within 2 ulp of the largest).
        INFO("dq " << test::rel_err(g_got.dq, g_ref.dq));
        CHECK(g_got.dq.scalar_type() == at::kBFloat16);
        CHECK(test::rel_err(g_got.dq, g_ref.dq) <= 8e-3);
        for (int64_t m = 0; m < blocks; ++m) {
          INFO("block " << m << " dK rel err " << test::rel_err(g_got.dk[m], g_ref.dk[m])
                        << " dV rel err " << test::rel_err(g_got.dv[m], g_ref.dv[m]));
          CHECK(test::rel_err(g_got.dk[m], g_ref.dk[m]) <= 8e-3);
          CHECK(test::rel_err(g_got.dv[m], g_ref.dv[m]) <= 8e-3);
        }
      }
    }
  }
}

TEST_CASE("GPU: the fused RoPE kernel equals the fp32 reference on the same inputs",
          "[gpu][model]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(13);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t d : {8, 72, 128}) {  // 72: half 36 is not a multiple of 8, the one-by-one path
      for (bool strided : {false, true}) {
        INFO("dtype " << c10::toString(dtype) << " head_dim " << d << " strided " << strided);
        const int64_t S = 333, heads = 4;
        auto wide = at::randn({S, (heads + 2) * d}, gen, f32).to(dev, dtype);
        auto x = strided ? wide.narrow(1, 2 * d, heads * d).view({S, heads, d})
                         : wide.narrow(1, 0, heads * d).contiguous().view({S, heads, d});
        DraftArchConfig c;
        c.head_dim = d;
        auto pos = at::arange(1000, 1000 + S, at::TensorOptions().dtype(at::kLong).device(dev));
        auto [cos, sin] = model::rope_tables(model::rope_inv_freq(c, dev), pos);
        for (double sign : {1.0, -1.0}) {
          auto ref = model::rope_rows(x.to(at::kFloat), cos, sin, sign, Impl::reference);
          auto got = model::rope_rows(x, cos, sin, sign, Impl::fused);
          // fp32 arithmetic, one rounding of the result (rel 2^-8 per element in bf16).
          INFO("sign " << sign << " rel err " << test::rel_err(got, ref));
          CHECK(got.is_contiguous());
          CHECK(test::rel_err(got, ref) <= 8e-3);
        }
      }
    }
  }
}

TEST_CASE("GPU: scaling by a device scalar in place equals the fp32 product", "[gpu][loss]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(17);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto g = at::full({}, 0.37, f32.device(dev));
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t n : {int64_t{7}, int64_t{12293}, int64_t{32000} * 64}) {  // odd sizes: unpacked
      INFO("dtype " << c10::toString(dtype) << " n " << n);
      auto x = at::randn({n}, gen, f32).to(dev, dtype);
      auto want = x.to(at::kFloat) * g;
      model::scale_in_place(x, g, Impl::fused);
      INFO("rel err " << test::rel_err(x, want));
      CHECK(test::rel_err(x, want) <= 4e-3);  // one rounding to bf16/fp16
    }
  }
}

TEST_CASE("GPU: the fused SwiGLU kernels equal the fp32 reference on the same inputs",
          "[gpu][model]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(19);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t inter : {37, 1024}) {  // 37: not a multiple of 8, the one-by-one path
      INFO("dtype " << c10::toString(dtype) << " intermediate " << inter);
      const int64_t rows = 301;
      auto ab = (at::randn({rows, 2 * inter}, gen, f32) * 3).to(dev, dtype);
      auto dp = at::randn({rows, inter}, gen, f32).to(dev, dtype);
      auto p_ref = model::swiglu_rows(ab.to(at::kFloat), Impl::reference);
      auto p_got = model::swiglu_rows(ab, Impl::fused);
      auto d_ref =
          model::swiglu_rows_backward(dp.to(at::kFloat), ab.to(at::kFloat), Impl::reference);
      auto d_got = model::swiglu_rows_backward(dp, ab, Impl::fused);
      // fp32 arithmetic, one rounding per output (rel 2^-8 per element in bf16).
      INFO("p rel err " << test::rel_err(p_got, p_ref) << ", d[a|b] rel err "
                        << test::rel_err(d_got, d_ref));
      CHECK(test::rel_err(p_got, p_ref) <= 8e-3);
      CHECK(test::rel_err(d_got, d_ref) <= 8e-3);
      // The backward that recomputes p on the way: the forward kernel's p, the same d[a|b].
      at::Tensor p_again;
      auto d_again = model::swiglu_rows_backward(dp, ab, Impl::fused, &p_again);
      CHECK(at::equal(p_again, p_got));
      CHECK(at::equal(d_again, d_got));
    }
  }
}

TEST_CASE("GPU: the fused target-row lse and argmax equal the ATen reference", "[gpu][loss]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(23);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t vocab : {7, 1000, 32000}) {
      INFO("dtype " << c10::toString(dtype) << " vocab " << vocab);
      const int64_t n = 41;
      // Rows of a wider tensor: the row stride is not the row length.
      auto wide = (at::randn({n, vocab + 8}, gen, f32) * 4).to(dev, dtype);
      auto logits = wide.narrow(1, 0, vocab);
      auto lse_ref = at::empty({n}, f32.device(dev)), lse_got = at::empty({n}, f32.device(dev));
      auto am_ref = at::empty({n}, f32.device(dev).dtype(at::kLong)),
           am_got = at::empty({n}, f32.device(dev).dtype(at::kLong));
      model::row_lse_argmax(logits, lse_ref, am_ref, Impl::reference);
      model::row_lse_argmax(logits, lse_got, am_got, Impl::fused);
      INFO("lse rel err " << test::rel_err(lse_got, lse_ref));
      CHECK(test::rel_err(lse_got, lse_ref) <= 1e-5);  // fp32 sums in another order
      CHECK(at::equal(am_got, am_ref));
    }
  }
}

TEST_CASE("GPU: to_compute's backward widens the gradient to fp32 exactly", "[gpu][model]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(17);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // 4096 x 8: the 16-byte path; 333 x 7 (odd count) and a gradient starting one element into
    // its storage: the one-by-one path.
    for (auto [rows, cols, offset] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {4096, 8, 0}, {333, 7, 0}, {64, 16, 1}}) {
      INFO("dtype " << c10::toString(dtype) << " shape " << rows << "x" << cols << " offset "
                    << offset);
      auto w = at::randn({rows, cols}, gen, at::TensorOptions().dtype(at::kFloat))
                   .to(dev)
                   .requires_grad_();
      auto y = model::to_compute(w, dtype, Impl::fused);
      CHECK(y.scalar_type() == dtype);
      CHECK(at::equal(y, w.detach().to(dtype)));
      auto storage = at::randn({rows * cols + offset}, gen, at::TensorOptions().dtype(at::kFloat))
                         .to(dev, dtype);
      auto g = storage.narrow(0, offset, rows * cols).view({rows, cols});
      y.backward(g);
      CHECK(at::equal(w.grad(), g.to(at::kFloat)));  // widening is exact
    }
  }
}

TEST_CASE("GPU: the fused target side of a chunk equals the ATen reference", "[gpu][loss]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(29);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto i64 = at::TensorOptions().dtype(at::kLong);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // 1000 and 9000: 16-byte loads (one tile of 4096, three); 1001 and 9001: one at a time (two
    // tiles of 512, eighteen); 151936: Qwen3's vocabulary. Draft ids sorted (as vocab mappings
    // are) or not.
    for (int64_t vt : {1000, 1001, 9000, 9001, 151936}) {
      for (bool sorted : {true, false}) {
        INFO("dtype " << c10::toString(dtype) << " Vt " << vt << " sorted " << sorted);
        const int64_t n = 37, vd = vt < 5000 ? 300 : vt / 5;
        auto ids = at::randperm(vt, gen, i64).narrow(0, 0, vd);
        if (sorted) ids = std::get<0>(ids.sort());
        ids = ids.to(dev);
        auto t2d = at::zeros({vt}, f32.device(dev).dtype(at::kBool)).index_fill_(0, ids, true);
        // Rounded to a few values: many ties, in the full row and among the draft columns.
        auto full = (at::randn({n, vt}, gen, f32) * 2).round().to(dev, dtype);
        auto order = model::draft_order(ids);
        auto run = [&](Impl impl) {
          std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> r{
              at::empty({n, vd}, full.options()), at::empty({n}, f32.device(dev)),
              at::empty({n}, i64.device(dev)), at::empty({n}, i64.device(dev).dtype(at::kBool))};
          model::target_side_rows(full, ids, order, t2d, std::get<0>(r), std::get<1>(r),
                                  std::get<2>(r), std::get<3>(r), impl);
          return r;
        };
        auto [d_ref, lse_ref, am_ref, in_ref] = run(Impl::reference);
        auto [d_got, lse_got, am_got, in_got] = run(Impl::fused);
        CHECK(at::equal(d_got, d_ref));  // copies
        INFO("lse rel err " << test::rel_err(lse_got, lse_ref));
        CHECK(test::rel_err(lse_got, lse_ref) <= 1e-5);  // fp32 sums in another order
        CHECK(at::equal(am_got, am_ref));
        CHECK(at::equal(in_got, in_ref));
        CHECK(in_ref.any().item<bool>());  // both outcomes occur
        CHECK(!in_ref.all().item<bool>());
      }
    }
  }
}

TEST_CASE("GPU: the fused RMSNorm backward (with a residual gradient) equals the fp32 reference",
          "[gpu][model]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(37);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // 4096: one pack of 8 per thread; 4104: two (the second partly used); 64: most threads idle.
    // 2100 rows: more than one wave of blocks, so blocks walk several rows.
    for (auto [H, rows] :
         {std::pair<int64_t, int64_t>{64, 333}, {4096, 333}, {4104, 333}, {4096, 2100}}) {
      INFO("dtype " << c10::toString(dtype) << " H " << H << " rows " << rows);
      auto x = at::randn({rows, H}, gen, f32) * 3;
      auto w = 1 + at::randn({H}, gen, f32) * 0.1;
      auto dy = at::randn({rows, H}, gen, f32), dres = at::randn({rows, H}, gen, f32);
      // Reference: autograd through ATen's RMSNorm in fp32 on the rounded inputs.
      auto xr = x.to(dtype).to(f32).to(dev).requires_grad_(),
           wr = w.to(dtype).to(f32).to(dev).requires_grad_();
      // The residual alias gets its own gradient, added to dx by the fused backward.
      auto [yr, rr] = model::rms_norm_and_residual(xr, wr, 1e-6, Impl::reference);
      torch::autograd::backward({yr, rr},
                                {dy.to(dtype).to(f32).to(dev), dres.to(dtype).to(f32).to(dev)});
      auto xg = x.to(dev, dtype).requires_grad_(), wg = w.to(dev, dtype).requires_grad_();
      auto [yg, rg] = model::rms_norm_and_residual(xg, wg, 1e-6, Impl::fused);
      torch::autograd::backward({yg, rg}, {dy.to(dev, dtype), dres.to(dev, dtype)});
      INFO("y " << test::rel_err(yg, yr) << " dx " << test::rel_err(xg.grad(), xr.grad()) << " dw "
                << test::rel_err(wg.grad(), wr.grad()));
      // Outputs rounded to bf16/fp16 once: within 2 ulp of the largest (2^-7).
      CHECK(test::rel_err(yg, yr) <= 8e-3);
      CHECK(test::rel_err(xg.grad(), xr.grad()) <= 8e-3);
      CHECK(test::rel_err(wg.grad(), wr.grad()) <= 8e-3);
    }
  }
}

TEST_CASE("GPU: the fused input norms (embedding rows by id, x in place) equal the fp32 reference",
          "[gpu][model]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(41);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    // 64: most threads idle; 4104: a second, partly used pack per thread.
    for (int64_t H : {64, 4104}) {
      INFO("dtype " << c10::toString(dtype) << " H " << H);
      const int64_t rows = 257, vocab = 1000, out = 96;
      auto embed = at::randn({vocab, H}, gen, f32) * 2;
      auto ids = at::randint(0, vocab, {rows}, gen, at::TensorOptions().dtype(at::kLong));
      auto h = at::randn({rows, H}, gen, f32) * 3;
      auto w_emb = 1 + at::randn({H}, gen, f32) * 0.1;
      auto w_hidden = 1 + at::randn({H}, gen, f32) * 0.1;
      auto w = at::randn({out, 2 * H}, gen, f32) / std::sqrt(2.0 * H);
      auto dy = at::randn({rows, out}, gen, f32), dres = at::randn({rows, H}, gen, f32);
      // The reference table in fp32 on the rounded inputs, then the fused one in dtype; h's
      // residual alias carries a gradient of its own (added to dh inside the norm's backward).
      auto run = [&](at::ScalarType dt, Impl impl) {
        auto on = [&](const at::Tensor& t) { return t.to(dtype).to(dev, dt); };
        auto hv = on(h).requires_grad_(), we = on(w_emb).requires_grad_(),
             wh = on(w_hidden).requires_grad_(), wv = on(w).requires_grad_();
        auto [y, res] = model::input_projection_and_residual(on(embed), ids.to(dev), hv, we, wh, wv,
                                                             1e-6, {}, impl, impl);
        torch::autograd::backward({y, res}, {on(dy), on(dres)});
        return std::vector<at::Tensor>{y, hv.grad(), we.grad(), wh.grad(), wv.grad()};
      };
      auto want = run(at::kFloat, Impl::reference);
      auto got = run(dtype, Impl::fused);
      const char* names[] = {"y", "dh", "d w_emb", "d w_hidden", "dW"};
      for (size_t i = 0; i < want.size(); ++i) {
        INFO(names[i] << " rel err " << test::rel_err(got[i].to(at::kFloat), want[i]));
        // bf16 GEMMs and norms over 2H-long rows: within a few ulp of the largest (2^-7).
        CHECK(test::rel_err(got[i].to(at::kFloat), want[i]) <= 2e-2);
      }
    }
  }
}

TEST_CASE("GPU: AdamW clips and steps like the CPU, and skips a non-finite step on the device",
          "[gpu][train]") {
  require_cuda();
  const c10::Device dev(c10::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(43);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  TrainingConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.max_grad_norm = 0.5;  // the random gradients' norm is ~9: every step clips
  at::Tensor a_cpu = at::randn({33, 17}, gen, f32), b_cpu = at::randn({40}, gen, f32);
  at::Tensor a_gpu = a_cpu.to(dev), b_gpu = b_cpu.to(dev);
  train::AdamW on_cpu({{"a", &a_cpu}, {"b", &b_cpu}}, cfg),
      on_gpu({{"a", &a_gpu}, {"b", &b_gpu}}, cfg);
  for (int step = 1; step <= 3; ++step) {
    auto ga = at::randn({33, 17}, gen, f32), gb = at::randn({40}, gen, f32);
    if (step == 2) ga[0][0] = NAN;  // skipped by both
    a_cpu.mutable_grad() = ga.clone();
    b_cpu.mutable_grad() = gb.clone();
    a_gpu.mutable_grad() = ga.to(dev);
    b_gpu.mutable_grad() = gb.to(dev);
    auto want = on_cpu.step(0.01), got = on_gpu.step(0.01);
    CHECK(want.skipped == (step == 2));
    CHECK(got.skipped == want.skipped);
    // fp32 on both devices, sums in another order: rel 1e-6 (5 ulp).
    INFO("step " << step << " a " << test::rel_err(a_gpu.cpu(), a_cpu) << " b "
                 << test::rel_err(b_gpu.cpu(), b_cpu));
    CHECK(test::rel_err(a_gpu.cpu(), a_cpu) <= 1e-6);
    CHECK(test::rel_err(b_gpu.cpu(), b_cpu) <= 1e-6);
  }
  CHECK(on_gpu.steps_taken() == 2);
  for (const auto& [key, t] : on_gpu.state()) {
    if (key.rfind("step.", 0) == 0) CHECK(t.item<double>() == 2.0);
  }
}
