// The Eagle3 draft on one rank (P = 1) against an independent fp64 reference written here with
// plain ops: dense attention masks over every cached key, full softmax losses, autograd for
// gradients. Also: finite differences of the model itself in fp64, the fused attention kernels
// against the reference kernel, and the chunked loss against one chunk.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/tril.h>
#include <ATen/ops/zeros.h>

#include <c10/core/GradMode.h>

#include <cmath>
#include <set>
#include <string>

#include "attention/local_attention.h"
#include "attention/ttt_attention.h"
#include "catch.h"
#include "core/error.h"
#include "core/kernels.h"
#include "dist/device.h"
#include "io/files.h"
#include "io/hf_export.h"
#include "model/draft_io.h"
#include "model/eagle3.h"
#include "model/layers.h"
#include "model/loss.h"
#include "model/recompute.h"
#include "model/reference.h"
#include "model/soft_ce_rows.h"
#include "model/vocab.h"
#include "torch/model_fixture.h"

using namespace eaglet;
using namespace eaglet::model;
using namespace eaglet::test;

namespace {

// ---- the independent fp64 reference (src/model/reference.h) -----------------------------------
struct RefResult {
  std::vector<double> step_loss;  // normalised loss_k
  at::Tensor total;
};

RefResult reference(const Problem& p, std::map<std::string, at::Tensor>& w,
                    const std::vector<double>& weights) {
  auto r = reference_unroll(p.cfg, w, p.w.embed_tokens, p.target, p.in, p.T, weights);
  return {r.loss_k, r.total};
}

}  // namespace

TEST_CASE("TTT losses and every gradient match an fp64 dense reference (CPU fp32, rel 1e-5)",
          "[model]") {
  for (int64_t T : {1, 3, 5}) {
    for (const char* kernel : {"reference", "flash"}) {
      INFO("T=" << T << " kernel=" << kernel);
      Problem p = make_problem(/*C=*/11, T, 1234 + T);
      std::vector<double> weights;
      for (int64_t k = 0; k < T; ++k) weights.push_back(std::pow(0.8, k));
      auto got = run_model(p, kernel, at::kFloat, /*chunk=*/4, weights);

      std::map<std::string, at::Tensor> w64;
      for (auto& [name, t] : p.w.trainable())
        w64[name] = t->detach().to(at::kDouble).set_requires_grad(true);
      auto ref = reference(p, w64, weights);
      ref.total.backward();

      const double tol = 1e-5;  // fp32 model vs fp64 reference
      for (int64_t k = 0; k < T; ++k) {
        INFO("step " << k << " model " << got.step_loss[k] << " reference " << ref.step_loss[k]);
        CHECK(std::abs(got.step_loss[k] - ref.step_loss[k]) <= tol * std::abs(ref.step_loss[k]));
      }
      for (auto& [name, g] : got.grads) {
        INFO("gradient of " << name);
        REQUIRE(w64[name].grad().defined());
        CHECK(rel_err(g, w64[name].grad()) <= tol);
      }
    }
  }
}

TEST_CASE("finite differences agree with autograd in fp64", "[model]") {
  Problem p = make_problem(/*C=*/7, /*T=*/3, 99);
  for (auto& [name, t] : p.w.trainable()) *t = t->detach().to(at::kDouble).set_requires_grad(true);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto base = run_model(p, "reference", at::kDouble, 3, weights);
  const double h = 1e-6;
  for (const char* name :
       {"fc.weight", "midlayer.self_attn.k_proj.weight", "midlayer.hidden_norm.weight",
        "midlayer.mlp.down_proj.weight", "lm_head.weight"}) {
    at::Tensor* t = nullptr;
    for (auto& [n, ptr] : p.w.trainable())
      if (n == name) t = ptr;
    for (int64_t idx : {0L, 5L}) {
      auto flat = t->detach().view({-1});
      const double orig = flat[idx].item<double>();
      flat[idx] = orig + h;
      double up = run_model(p, "reference", at::kDouble, 3, weights).total;
      flat[idx] = orig - h;
      double down = run_model(p, "reference", at::kDouble, 3, weights).total;
      flat[idx] = orig;
      double fd = (up - down) / (2 * h), ad = base.grads[name].view({-1})[idx].item<double>();
      INFO(name << "[" << idx << "] finite difference " << fd << " autograd " << ad);
      CHECK(std::abs(fd - ad) <=
            1e-6 * std::max(1.0, std::abs(ad)));  // central difference, h = 1e-6
    }
  }
}

TEST_CASE("fused attention kernels equal the reference kernel in the TTT merge", "[attention]") {
  auto gen = at::detail::createCPUGenerator(7);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t S = 13, H = 4, KV = 2, d = 8, steps = 3;
  auto q = (at::randn({S, H, d}, gen, f32) * 2).set_requires_grad(true);
  auto ks = (at::randn({steps, S, KV, d}, gen, f32) * 2).set_requires_grad(true);
  auto vs = at::randn({steps, S, KV, d}, gen, f32).set_requires_grad(true);
  auto probe = at::randn({S, H, d}, gen, f32);
  std::vector<at::Tensor> ref;
  for (const char* name : {"reference", "flash"}) {
    INFO(name);
    auto out = attention::ttt_attention(
        q, ks.unbind(0), vs.unbind(0),
        attention::local_block0(attention::local_kernel(name, c10::kCPU, at::kFloat)),
        1.0 / std::sqrt(8.0));
    (out * probe).sum().backward();
    std::vector<at::Tensor> got{out.detach(), q.grad().clone(), ks.grad().clone(),
                                vs.grad().clone()};
    q.mutable_grad() = at::Tensor();
    ks.mutable_grad() = at::Tensor();
    vs.mutable_grad() = at::Tensor();
    if (ref.empty()) {
      ref = got;
      continue;
    }
    for (size_t i = 0; i < got.size(); ++i) CHECK(rel_err(got[i], ref[i]) <= 1e-5);  // fp32 kernels
  }
}

TEST_CASE("chunked fused loss equals a single chunk", "[model]") {
  Problem p = make_problem(/*C=*/10, /*T=*/2, 5);
  std::vector<double> weights{1.0, 0.8};
  auto one = run_model(p, "reference", at::kFloat, 1 << 20, weights);
  auto many = run_model(p, "reference", at::kFloat, 3, weights);
  for (size_t k = 0; k < one.step_loss.size(); ++k)
    CHECK(std::abs(one.step_loss[k] - many.step_loss[k]) <= 1e-6);
  for (auto& [name, g] : one.grads) {
    INFO(name);
    CHECK(rel_err(many.grads[name], g) <= 1e-5);  // fp32 summation order only
  }
}

TEST_CASE("vocabulary from counts: top Vd, ties to the lower id, sorted, offsets", "[vocab]") {
  auto counts = at::zeros({8}, at::TensorOptions().dtype(at::kLong));
  // token: 0 1 2 3 4 5 6 7 ; counts 5 0 7 5 1 5 0 9 -> top 4: 7(9) 2(7) 0(5) 3(5) [5 loses the tie]
  int64_t c[] = {5, 0, 7, 5, 1, 5, 0, 9};
  for (int i = 0; i < 8; ++i) counts[i] = c[i];
  auto m = vocab_from_counts(counts, 4);
  auto ids = m.draft_to_target();
  std::vector<int64_t> want{0, 2, 3, 7};
  for (int i = 0; i < 4; ++i) CHECK(ids[i].item<int64_t>() == want[i]);
  CHECK(m.d2t[3].item<int64_t>() == 7 - 3);
  CHECK(m.t2d.sum().item<int64_t>() == 4);
  CHECK(m.t2d[5].item<bool>() == false);
}

TEST_CASE("Target rows: draft columns of one full-head GEMM, lse, argmax and the in-draft mask",
          "[model][loss]") {
  auto gen = at::detail::createCPUGenerator(29);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t n = 23, vt = 50, ht = 8;
  auto counts = at::randint(0, 100, {vt}, gen, at::TensorOptions().dtype(at::kLong));
  auto vocab = vocab_from_counts(counts, 20);
  auto rows = at::randn({n, ht}, gen, f64), head = at::randn({vt, ht}, gen, f64);
  auto ids = vocab.draft_to_target();
  auto t = target_rows(rows, head, ids, draft_order(ids), vocab.t2d, /*chunk=*/5,
                       at::kDouble);  // last chunk short
  auto want_logits = at::matmul(rows, head.index_select(0, ids).t());
  CHECK(rel_err(t.logits, want_logits) <= 1e-12);
  CHECK(rel_err(t.lse, at::logsumexp(want_logits, {-1})) <= 1e-12);
  CHECK(at::equal(t.argmax, at::argmax(want_logits, -1)));
  auto want_in = vocab.t2d.index_select(0, at::argmax(at::matmul(rows, head.t()), -1));
  CHECK(at::equal(t.in_draft, want_in));
  CHECK(t.in_draft.any().item<bool>());  // both outcomes occur with these numbers
  CHECK(!t.in_draft.all().item<bool>());
}

TEST_CASE("draft_order: the draft ids ascending with their draft columns", "[model][loss]") {
  auto ids = at::tensor(std::vector<int64_t>{5, 2, 9, 0});
  auto order = draft_order(ids);
  CHECK(order.scalar_type() == at::kInt);
  CHECK(order.is_contiguous());
  auto want = at::tensor(std::vector<int32_t>{0, 2, 5, 9, 3, 1, 0, 2}).view({2, 4});
  CHECK(at::equal(order, want));  // row 0: ids ascending; row 1: ids[row 1] == row 0
}

TEST_CASE("RoPE as one autograd function: value and gradient equal HF's formula under autograd",
          "[model]") {
  // fp64, x a strided view (as q inside the fused qkv output); the function's backward is the
  // rotation with −sin, the reference's gradient comes from autograd through HF's expression.
  DraftArchConfig c = tiny_config();
  c.head_dim = 16;
  const int64_t S = 11, heads = 3, d = c.head_dim;
  auto gen = at::detail::createCPUGenerator(3);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto wide = at::randn({S, (heads + 2) * d}, gen, f64);
  auto probe = at::randn({S, heads, d}, gen, f64);
  auto pos = at::arange(5, 5 + S, at::TensorOptions().dtype(at::kLong));
  auto [cos, sin] = rope_tables(rope_inv_freq(c, c10::kCPU), pos);
  auto run = [&](bool ours) {
    auto w = wide.clone().set_requires_grad(true);
    auto x = w.narrow(1, d, heads * d).view({S, heads, d});  // row stride (heads + 2)·d
    auto y = ours ? apply_rope(x, cos.to(at::kDouble), sin.to(at::kDouble), Impl::reference)
                  : reference_rope(x, pos, c);
    (y * probe).sum().backward();
    return std::make_pair(y.detach(), w.grad());
  };
  auto [y_ours, g_ours] = run(true);
  auto [y_ref, g_ref] = run(false);
  INFO("value rel err " << rel_err(y_ours, y_ref) << ", gradient rel err "
                        << rel_err(g_ours, g_ref));
  CHECK(rel_err(y_ours, y_ref) <= 1e-6);  // tables in fp32 here, fp64 in the reference
  CHECK(rel_err(g_ours, g_ref) <= 1e-6);
  CHECK(g_ours.narrow(1, 0, d).abs().max().item<double>() == 0.0);  // only the view's columns
}

TEST_CASE("RoPE scaling: linear and llama3 inverse frequencies match HF's formulas", "[model]") {
  DraftArchConfig c = tiny_config();
  c.head_dim = 64;
  c.rope_theta = 500000.0;
  auto base = rope_inv_freq(c, c10::kCPU).to(at::kDouble);
  // none: θ^(−2i/d)
  for (int64_t i = 0; i < 32; ++i) {
    double want = std::pow(500000.0, -2.0 * i / 64.0);
    CHECK(std::abs(base[i].item<double>() - want) <= 1e-6 * want);  // fp32 table
  }
  c.rope_type = "linear";
  c.rope_factor = 4.0;
  auto lin = rope_inv_freq(c, c10::kCPU).to(at::kDouble);
  CHECK(rel_err(lin, base / 4.0) <= 1e-6);
  c.rope_type = "llama3";
  c.rope_factor = 8.0;
  c.rope_low_freq_factor = 1.0;
  c.rope_high_freq_factor = 4.0;
  c.rope_original_max_position_embeddings = 8192;
  auto l3 = rope_inv_freq(c, c10::kCPU).to(at::kDouble);
  int regimes[3] = {0, 0, 0};
  for (int64_t i = 0; i < 32; ++i) {
    // transformers' _compute_llama3_parameters, element by element
    double f = base[i].item<double>(), wavelen = 2 * M_PI / f, want;
    const double low_wavelen = 8192 / 1.0, high_wavelen = 8192 / 4.0;
    if (wavelen < high_wavelen) {
      want = f, regimes[0]++;
    } else if (wavelen > low_wavelen) {
      want = f / 8.0, regimes[1]++;
    } else {
      double smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0);
      want = (1 - smooth) * f / 8.0 + smooth * f, regimes[2]++;
    }
    INFO("i=" << i);
    CHECK(std::abs(l3[i].item<double>() - want) <= 1e-6 * want);
  }
  CHECK(regimes[0] > 0);  // every branch exercised
  CHECK(regimes[1] > 0);
  CHECK(regimes[2] > 0);
}

TEST_CASE("a saved draft loads back bit for bit and gives the same losses", "[model][io]") {
  Problem p = make_problem(/*C=*/9, /*T=*/3, 42);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto before = run_model(p, "flash", at::kFloat, 4, weights);
  const VocabMap& vocab = p.vocab;
  std::string dir = "/tmp/eaglet_test_draft_io";
  save_draft(dir, p.w, p.cfg, vocab);
  Problem q = make_problem(9, 3, 43);  // different weights, same shapes
  q.in = p.in;
  q.target = p.target;
  q.w.embed_tokens = p.w.embed_tokens;
  VocabMap loaded;
  load_draft(dir, q.cfg, q.w, &loaded);
  for (size_t i = 0; i < p.w.trainable().size(); ++i) {
    INFO(p.w.trainable()[i].first);
    CHECK(at::equal(*p.w.trainable()[i].second, *q.w.trainable()[i].second));
  }
  CHECK(at::equal(loaded.d2t, vocab.d2t));
  CHECK(at::equal(loaded.t2d, vocab.t2d));
  auto after = run_model(q, "flash", at::kFloat, 4, weights);
  for (size_t k = 0; k < before.step_loss.size(); ++k)
    CHECK(before.step_loss[k] == after.step_loss[k]);  // bitwise
}

TEST_CASE(
    "model.init_from on an export (SGLang and vLLM names) reproduces the losses of the bf16 "
    "weights",
    "[model][io]") {
  Problem p = make_problem(/*C=*/9, /*T=*/3, 314);
  std::vector<double> weights{1.0, 0.8, 0.64};
  const std::string ckpt = "/tmp/eaglet_test_initfrom_ckpt",
                    out = "/tmp/eaglet_test_initfrom_export";
  io::remove_tree(ckpt);
  save_draft(ckpt, p.w, p.cfg, p.vocab);
  // What the export holds: every weight rounded to bf16. Losses of the rounded model are the
  // target.
  Problem rounded = p;
  for (size_t i = 0; i < p.w.trainable().size(); ++i)
    *rounded.w.trainable()[i].second = p.w.trainable()[i]
                                           .second->detach()
                                           .to(at::kBFloat16)
                                           .to(at::kFloat)
                                           .set_requires_grad(true);
  auto want = run_model(rounded, "flash", at::kFloat, 4, weights);
  {
    io::remove_tree(out);
    io::ExportOptions no_embeddings;  // save_draft writes no embedding, and there is no run
    no_embeddings.embeddings = false;
    io::export_draft(ckpt, out, no_embeddings);
    Problem q = make_problem(9, 3, 271);  // other weights, same data and target as p
    q.in = p.in;
    q.target = p.target;
    q.w.embed_tokens = p.w.embed_tokens;
    VocabMap loaded;
    load_draft(out, q.cfg, q.w, &loaded);
    CHECK(at::equal(loaded.d2t, p.vocab.d2t));
    CHECK(at::equal(loaded.t2d, p.vocab.t2d));
    auto got = run_model(q, "flash", at::kFloat, 4, weights);
    for (size_t k = 0; k < want.step_loss.size(); ++k)
      CHECK(got.step_loss[k] == want.step_loss[k]);  // bitwise
  }
}

TEST_CASE("recomputing the MLP in backward gives the same losses and gradients", "[model]") {
  Problem p = make_problem(/*C=*/12, /*T=*/3, 808);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto kept = run_model(p, "flash", at::kFloat, 5, weights, MlpRecompute::none);
  for (auto mode : {MlpRecompute::swiglu, MlpRecompute::full}) {
    INFO("mode " << static_cast<int>(mode));
    auto again = run_model(p, "flash", at::kFloat, 5, weights, mode);
    for (size_t k = 0; k < kept.step_loss.size(); ++k)
      CHECK(kept.step_loss[k] == again.step_loss[k]);
    for (auto& [name, g] : kept.grads) {
      INFO(name << " rel err " << rel_err(again.grads[name], g));
      CHECK(rel_err(again.grads[name], g) <= 1e-6);  // same ops; only summation order may differ
    }
  }
}

TEST_CASE("kernel table: a row per kernel, reference by default, fused where it cannot run fails",
          "[model]") {
  // The rows: named, distinct, and set together by Kernels::all.
  std::set<std::string> names;
  for (const auto& row : kKernelRows) names.insert(row.name);
  CHECK(names.size() == kKernelRows.size());
  const auto fused = Kernels::all(Impl::fused), reference = Kernels::all(Impl::reference);
  CHECK(Kernels{} == reference);  // what TttOptions holds unless a run chooses
  for (const auto& row : kKernelRows) {
    INFO(row.name);
    CHECK(fused.*row.field == Impl::fused);
    CHECK(kernels_text(fused).find(std::string(row.name) + "=fused") != std::string::npos);
  }
  // On the CPU nothing is fused, whatever the dtype.
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    CHECK(choose_kernels(c10::Device(c10::kCPU), dt) == reference);
  CHECK_FALSE(use_fused(Impl::reference, at::zeros({8}, at::kBFloat16), "test"));
  // Fused asked for on CPU tensors: an error naming the op, no silent fallback.
  auto error_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto bf16 = at::TensorOptions().dtype(at::kBFloat16);
  auto x = at::zeros({3, 2, 8}, bf16);
  DraftArchConfig c = tiny_config();
  auto [cos, sin] = rope_tables(rope_inv_freq(c, c10::kCPU), at::arange(3, at::kLong));
  CHECK(error_of([&] { rope_rows(x, cos, sin, 1.0, Impl::fused); }).find("rope") !=
        std::string::npos);
  CHECK(error_of([&] {
          swiglu_rows(at::zeros({3, 8}, bf16), Impl::fused);
        }).find("swiglu") != std::string::npos);
  auto g = at::ones({}, at::kFloat);
  auto y = at::zeros({5}, bf16);
  CHECK(error_of([&] { scale_in_place(y, g, Impl::fused); }).find("scale") != std::string::npos);
  // The whole unroll with every row fused on the CPU stops at its first op.
  Problem p = make_problem(/*C=*/5, /*T=*/2, 7);
  TttOptions opt;
  opt.ttt_length = 2;
  opt.dtype = at::kBFloat16;
  opt.block0 = attention::local_block0(attention::local_kernel("reference", c10::kCPU, opt.dtype));
  opt.loss_weights = {1.0, 0.8};
  opt.kernels = fused;
  CHECK(error_of([&] { ttt_forward(p.w, p.cfg, p.target, p.in, opt); }).find("fused kernel") !=
        std::string::npos);
}

TEST_CASE("weight gradients: bf16 uses summed in fp32, the fp32 masters get the sum unrounded",
          "[model]") {
  // 64 uses of one bf16 compute copy of two stacked masters (as q|k|v): the products of bf16
  // dy and x are exact in fp32, so the only error left is the fp32 summation (rel ~1e-7); summed
  // in bf16 (one rounding per use) it would be ~1e-3.
  auto gen = at::detail::createCPUGenerator(31);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t uses = 64, rows = 32, in = 16;
  auto a = at::randn({24, in}, gen, f32).set_requires_grad(true);
  auto b = at::randn({8, in}, gen, f32).set_requires_grad(true);
  auto cw = to_compute({a, b}, at::kBFloat16, uses);
  REQUIRE(cw.w.scalar_type() == at::kBFloat16);
  at::Tensor loss, want = at::zeros({32, in}, f32.dtype(at::kDouble));
  for (int64_t i = 0; i < uses; ++i) {
    auto x = at::randn({rows, in}, gen, f32).to(at::kBFloat16);
    auto probe = at::randn({rows, 32}, gen, f32).to(at::kBFloat16);  // dy, exact in bf16
    auto y = linear(x, cw.w, cw.grad);
    auto term = (y.to(at::kFloat) * probe.to(at::kFloat)).sum();
    loss = loss.defined() ? loss + term : term;
    want += at::matmul(probe.t().to(at::kDouble), x.to(at::kDouble));
  }
  loss.backward();
  REQUIRE(a.grad().scalar_type() == at::kFloat);
  INFO("rel err " << rel_err(a.grad(), want.narrow(0, 0, 24)) << ", "
                  << rel_err(b.grad(), want.narrow(0, 24, 8)));
  const double tol = 1e-5;  // fp32 accumulation of exact products
  CHECK(rel_err(a.grad(), want.narrow(0, 0, 24)) <= tol);
  CHECK(rel_err(b.grad(), want.narrow(0, 24, 8)) <= tol);

  // The buffer itself: two column blocks per use (as the input projection's), several adds to a
  // block within one use (as the loss's chunks); only the last use gets the sum.
  WeightGrad g(3);
  auto sum_want = at::zeros({5, 2 * in}, f32.dtype(at::kDouble));
  for (int use = 0; use < 3; ++use) {
    for (int chunk = 0; chunk < 2; ++chunk) {
      auto dy = at::randn({rows, 5}, gen, f32).to(at::kBFloat16);
      auto x = at::randn({rows, 2 * in}, gen, f32).to(at::kBFloat16);
      g.add(dy, x.narrow(1, 0, in), 2 * in, 0);
      g.add(dy, x.narrow(1, in, in), 2 * in, in);
      sum_want += at::matmul(dy.t().to(at::kDouble), x.to(at::kDouble));
    }
    auto sum = g.finish();
    CHECK(sum.defined() == (use == 2));
    if (!sum.defined()) continue;
    CHECK(sum.scalar_type() == at::kFloat);
    INFO("buffer rel err " << rel_err(sum, sum_want));
    CHECK(rel_err(sum, sum_want) <= tol);
    CHECK(g.returned(sum).is_same(sum));  // a plain weight: the last use returns the sum
  }
}

TEST_CASE("bf16 unroll on the CPU: fp32 gradients on every master, near the fp32 model's",
          "[model]") {
  Problem p = make_problem(/*C=*/16, /*T=*/3, 4242);
  std::vector<double> weights{1.0, 0.8, 0.64};
  auto ref = run_model(p, "reference", at::kFloat, 5, weights);
  auto got = run_model(p, "reference", at::kBFloat16, 5, weights);
  for (auto& [name, g] : ref.grads) {
    INFO(name << " rel err " << rel_err(got.grads[name], g));
    CHECK(got.grads[name].scalar_type() == at::kFloat);
    CHECK(rel_err(got.grads[name], g) <= 5e-2);  // bf16 activations (as the GPU test's bound)
  }
}
