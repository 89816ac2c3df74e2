// Per-op checks in one table (tests/torch/op_harness.h, after ggml's test-backend-ops): every
// custom autograd function of the draft's training step, forward against a plain fp64 reference
// written here and backward against the reference's autograd and finite differences, each case
// with its declared tolerances. The same table runs in fp64 on the CPU ([ops]), in bf16 on the CPU
// ([ops][bf16]) and in bf16 on the GPU with the fused and the reference kernels ([gpu][ops]).
//
// Each case calls the op under test in one small lambda, so that a signature change of an entry
// point (WeightGrad, linear, to_compute, FusedLoss) is a one-line edit here.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/argmax.h>
#include <ATen/ops/argsort.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/einsum.h>
#include <ATen/ops/full.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/triu.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <string>
#include <vector>

#include "attention/local_attention.h"
#include "attention/ring.h"
#include "attention/ttt_attention.h"
#include "attention/ulysses.h"
#include "catch.h"
#include "core/config.h"
#include "dist/device.h"
#include "model/layers.h"
#include "model/loss.h"
#include "model/recompute.h"
#include "model/soft_ce_rows.h"
#include "torch/op_harness.h"

using namespace eaglet;
using namespace eaglet::test::ops;

namespace {

constexpr double kEps = 1e-6;  // RMSNorm's epsilon
const auto kLong = at::TensorOptions().dtype(at::kLong);

// Tolerances shared by most cases. fp64: an fp64 composition against another (summation order
// only). fd: central differences with h = 1e-5 (truncation ~h², cancellation ~1e-16/h of the
// functional). bf16: one rounding of every stored tensor is 2^-9 of its scale; sums of rounded
// products (GEMMs, norms) and the backward's two GEMMs reach a few times that.
constexpr double kFp64 = 1e-12, kFd = 1e-6;

std::vector<Inputs> one_rank(Inputs in) {
  return {std::move(in)};
}
// A single-rank reference from a function of one rank's inputs.
template <class F>
std::function<std::vector<Tensors>(const std::vector<Tensors>&)> single(F f) {
  return [f](const std::vector<Tensors>& in) { return std::vector<Tensors>{f(in[0])}; };
}

// --- plain references (fp64 ATen ops)
// -------------------------------------------------------------
at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& w) {
  return x * at::rsqrt((x * x).mean({-1}, true) + kEps) * w;
}

at::Tensor rope_ref(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

at::Tensor swiglu_ref(const at::Tensor& n, const at::Tensor& gate_up, const at::Tensor& down) {
  const int64_t inter = down.size(1);
  auto ab = n.mm(gate_up.t());
  return (at::silu(ab.narrow(1, 0, inter)) * ab.narrow(1, inter, inter)).mm(down.t());
}

// Dense TTT attention: q [S, H, d]; ks[m], vs[m] [S, Hkv, d]. Query i sees the block-0 keys
// j <= i and, for every block m >= 1, the key of its own position i; one softmax over all of them.
at::Tensor ttt_attention_ref(const at::Tensor& q, const Tensors& ks, const Tensors& vs,
                             double scale) {
  const int64_t S = q.size(0), group = q.size(1) / ks[0].size(1);
  auto heads = [&](const at::Tensor& x) { return x.repeat_interleave(group, 1); };  // [S, H, d]
  auto future = at::triu(at::ones({S, S}, at::TensorOptions().dtype(at::kBool)), 1);
  Tensors scores{
      (at::einsum("ihd,jhd->hij", {q, heads(ks[0])}) * scale).masked_fill(future, -INFINITY)};
  for (size_t m = 1; m < ks.size(); ++m)
    scores.push_back(((q * heads(ks[m])).sum(-1) * scale).t().unsqueeze(-1));  // [H, S, 1]
  auto p = at::softmax(at::cat(scores, -1), -1);                               // [H, S, S + k]
  auto out = at::einsum("hij,jhd->ihd", {p.narrow(-1, 0, S), heads(vs[0])});
  for (size_t m = 1; m < ks.size(); ++m)
    out = out + p.select(-1, S + m - 1).t().unsqueeze(-1) * heads(vs[m]);
  return out;
}

// --- cases
// ------------------------------------------------------------------------------------------

Case to_compute_case() {
  Case c;
  c.name = "to_compute fp32 master";
  c.make = [](at::Generator& g) { return one_rank({diff("w", randn(g, {6, 10}), Role::f32)}); };
  c.outputs = {{"w_compute"}};
  c.op = [](const Tensors& in, const Run& run) {
    return Tensors{model::to_compute(in[0], run.dtype, run.kernels.widen)};
  };
  c.reference = single([](const Tensors& in) { return Tensors{in[0]}; });
  // fp64: the gradient is rounded to the fp32 master (2^-24). bf16: the forward is one rounding;
  // the backward widens bf16 to fp32, exact.
  c.tol = {1e-7, kFd, 4e-3, 0};
  return c;
}

Case rms_norm_case(bool residual) {
  Case c;
  c.name = residual ? "rms_norm_and_residual" : "rms_norm";
  // H a multiple of 8 and contiguous rows: the fused backward's shapes.
  c.make = [](at::Generator& g) {
    return one_rank({diff("x", randn(g, {16, 64}, 2)), diff("w", 1 + randn(g, {64}, 0.1))});
  };
  c.outputs = residual ? std::vector<Output>{{"y"}, {"residual"}} : std::vector<Output>{{"y"}};
  c.op = [residual](const Tensors& in, const Run& run) {
    if (!residual) return Tensors{model::rms_norm(in[0], in[1], kEps, run.kernels.rms_norm)};
    auto [y, r] = model::rms_norm_and_residual(in[0], in[1], kEps, run.kernels.rms_norm);
    return Tensors{y, r};
  };
  c.reference = single([residual](const Tensors& in) {
    auto y = rms_norm_ref(in[0], in[1]);
    return residual ? Tensors{y, in[0]} : Tensors{y};
  });
  c.tol = {kFp64, kFd, 1e-2, 2e-2};
  return c;
}

// Two uses of one projection weight (two TTT steps), its gradient summed by WeightGrad.
Case input_projection_case() {
  Case c;
  c.name = "input_projection_and_residual x2";
  c.make = [](at::Generator& g) {
    const int64_t V = 12, H = 16, out = 24;
    return one_rank(
        {nodiff("embed", randn(g, {V, H})), fixed("ids1", at::randint(0, V, {6}, g, kLong)),
         fixed("ids2", at::randint(0, V, {5}, g, kLong)), diff("h1", randn(g, {6, H}, 2)),
         diff("h2", randn(g, {5, H}, 2)), diff("w_emb", 1 + randn(g, {H}, 0.1)),
         diff("w_hidden", 1 + randn(g, {H}, 0.1)), diff("w", randn(g, {out, 2 * H}, 0.3))});
  };
  c.outputs = {{"y1"}, {"residual1"}, {"y2"}, {"residual2"}};
  c.op = [](const Tensors& in, const Run& run) {
    const model::WeightGrad grad(2);
    auto use = [&](const at::Tensor& ids, const at::Tensor& h) {
      return model::input_projection_and_residual(in[0], ids, h, in[5], in[6], in[7], kEps, grad,
                                                  run.kernels.input_norms, run.kernels.rms_norm);
    };
    auto [y1, r1] = use(in[1], in[3]);
    auto [y2, r2] = use(in[2], in[4]);
    return Tensors{y1, r1, y2, r2};
  };
  c.reference = single([](const Tensors& in) {
    auto y = [&](const at::Tensor& ids, const at::Tensor& h) {
      auto x =
          at::cat({rms_norm_ref(in[0].index_select(0, ids), in[5]), rms_norm_ref(h, in[6])}, -1);
      return x.mm(in[7].t());
    };
    return Tensors{y(in[1], in[3]), in[3], y(in[2], in[4]), in[4]};
  });
  c.tol = {kFp64, kFd, 2e-2, 3e-2};
  return c;
}

// Three uses of one weight (WeightGrad(3)), two with a residual added by the GEMM.
Case linear_case() {
  Case c;
  c.name = "linear x3, residual";
  c.make = [](at::Generator& g) {
    return one_rank({diff("x1", randn(g, {5, 12})), diff("x2", randn(g, {7, 12})),
                     diff("x3", randn(g, {4, 12})), diff("w", randn(g, {10, 12}, 0.3)),
                     diff("r1", randn(g, {5, 10})), diff("r2", randn(g, {7, 10}))});
  };
  c.outputs = {{"y1"}, {"y2"}, {"y3"}};
  c.op = [](const Tensors& in, const Run&) {
    const model::WeightGrad grad(3);
    return Tensors{model::linear(in[0], in[3], grad, in[4]),
                   model::linear(in[1], in[3], grad, in[5]), model::linear(in[2], in[3], grad)};
  };
  c.reference = single([](const Tensors& in) {
    return Tensors{in[4] + in[0].mm(in[3].t()), in[5] + in[1].mm(in[3].t()), in[2].mm(in[3].t())};
  });
  c.tol = {kFp64, kFd, 1e-2, 2e-2};
  return c;
}

// x a strided view (heads 1..3 of 5), as q and k are views of the q|k|v projection's output.
Case rope_case() {
  Case c;
  c.name = "apply_rope strided";
  c.make = [](at::Generator& g) {
    const int64_t S = 6, d = 8;
    DraftArchConfig cfg;
    cfg.head_dim = d;
    auto positions = at::randint(0, 500, {S}, g, kLong);
    auto [cos, sin] = model::rope_tables(model::rope_inv_freq(cfg, c10::kCPU), positions);
    return one_rank({diff("x", randn(g, {S, 5, d})), nodiff("cos", cos.to(at::kDouble), Role::f32),
                     nodiff("sin", sin.to(at::kDouble), Role::f32)});
  };
  c.outputs = {{"y"}};
  c.op = [](const Tensors& in, const Run& run) {
    return Tensors{model::apply_rope(in[0].narrow(1, 1, 3), in[1], in[2], run.kernels.rope)};
  };
  c.reference = single(
      [](const Tensors& in) { return Tensors{rope_ref(in[0].narrow(1, 1, 3), in[1], in[2])}; });
  c.tol = {kFp64, kFd, 1e-2, 1e-2};
  return c;
}

// Two uses of the weights (MlpGrads over two TTT steps), the first with a residual.
Case swiglu_case(model::MlpRecompute recompute, const char* level) {
  Case c;
  c.name = std::string("swiglu_mlp recompute=") + level + " x2";
  c.make = [](at::Generator& g) {
    const int64_t H = 16, I = 16;
    return one_rank({diff("n1", randn(g, {6, H})), diff("n2", randn(g, {5, H})),
                     diff("gate_up", randn(g, {2 * I, H}, 0.4)),
                     diff("down", randn(g, {H, I}, 0.4)), diff("r1", randn(g, {6, H}))});
  };
  c.outputs = {{"y1"}, {"y2"}};
  c.op = [recompute](const Tensors& in, const Run& run) {
    const model::MlpGrads grads{model::WeightGrad(2), model::WeightGrad(2)};
    return Tensors{
        model::swiglu_mlp(in[0], in[2], in[3], recompute, grads, in[4], run.kernels.swiglu),
        model::swiglu_mlp(in[1], in[2], in[3], recompute, grads, {}, run.kernels.swiglu)};
  };
  c.reference = single([](const Tensors& in) {
    return Tensors{in[4] + swiglu_ref(in[0], in[2], in[3]), swiglu_ref(in[1], in[2], in[3])};
  });
  c.tol = {kFp64, kFd, 2e-2, 3e-2};
  return c;
}

// The loss of two TTT steps over two runs of rows (the zigzag layout's U = 1 shape: each run
// followed by its halo of T target rows), chunked across the runs' ends: target_rows once, then
// FusedLoss::step per step. Only the sum of the weighted losses is differentiated (the fused
// loss's contract: every step gets the same upstream gradient), in h of each step and lm_head.
Case fused_loss_case() {
  Case c;
  c.name = "fused loss: target_rows + 2 steps";
  constexpr int64_t T = 2, n1 = 6, n2 = 4, N = n1 + n2, H = 16, Vd = 12, Vt = 20, Ht = 8, chunk = 4;
  c.make = [](at::Generator& g) {
    auto ids = at::randperm(Vt, g, kLong).narrow(0, 0, Vd);  // draft -> target ids, unsorted
    auto t2d = at::zeros({Vt}, at::TensorOptions().dtype(at::kBool)).index_fill(0, ids, true);
    auto mask = [&] { return (randn(g, {N}) > -0.5).to(at::kDouble); };
    return one_rank({nodiff("lhs", randn(g, {N + 2 * T, Ht})),
                     nodiff("full_head", randn(g, {Vt, Ht})), fixed("draft_ids", ids),
                     fixed("t2d", t2d), diff("h0", randn(g, {N, H})), diff("h1", randn(g, {N, H})),
                     diff("lm_head", randn(g, {Vd, H}, 0.5)), nodiff("mask0", mask(), Role::wide),
                     nodiff("mask1", mask(), Role::wide),
                     nodiff("w0", at::full({}, 0.7, at::kDouble), Role::wide),
                     nodiff("w1", at::full({}, 0.3, at::kDouble), Role::wide)});
  };
  c.outputs = {{"total"},
               {"loss0", Output::value},
               {"loss1", Output::value},
               {"correct0", Output::discrete},
               {"correct1", Output::discrete},
               {"target logits", Output::value},
               {"target lse", Output::value},
               {"target argmax", Output::discrete},
               {"target in_draft", Output::discrete}};
  // Step k's rows i+k of each run: target rows [k, k + n1) and [n1 + T + k, + n2).
  auto spans = [](int64_t k) { return std::vector<model::RowSpan>{{k, n1}, {n1 + T + k, n2}}; };
  c.op = [spans](const Tensors& in, const Run& run) {
    const auto& k = run.kernels;
    auto targets = model::target_rows(in[0], in[1], in[2], model::draft_order(in[2]), in[3], chunk,
                                      run.dtype, k.target_rows);
    model::FusedLoss loss(in[6], chunk, model::WeightGrad{}, k.soft_ce_rows, k.scale);
    auto s0 = loss.step(in[4], targets, spans(0), in[7], in[9], /*last=*/false);
    auto s1 = loss.step(in[5], targets, spans(1), in[8], in[10], /*last=*/true);
    return Tensors{s0.weighted + s1.weighted,
                   s0.loss,
                   s1.loss,
                   s0.correct,
                   s1.correct,
                   targets.logits,
                   targets.lse,
                   targets.argmax,
                   targets.in_draft};
  };
  c.reference = single([spans](const Tensors& in) {
    auto full = in[0].mm(in[1].t());
    auto logits = full.index_select(1, in[2]);
    auto step = [&](int64_t k, const at::Tensor& h, const at::Tensor& mask, const at::Tensor& w) {
      Tensors rows;
      for (const auto& s : spans(k)) rows.push_back(logits.narrow(0, s.target, s.rows));
      auto target = at::cat(rows);
      auto z = h.mm(in[6].t());
      auto per_row = at::logsumexp(z, {-1}) - (at::softmax(target, -1) * z).sum(-1);
      auto correct = ((z.argmax(-1) == target.argmax(-1)).to(at::kDouble) * mask).sum();
      return Tensors{w * (per_row * mask).sum(), (per_row * mask).sum(), correct};
    };
    auto s0 = step(0, in[4], in[7], in[9]), s1 = step(1, in[5], in[8], in[10]);
    return Tensors{s0[0] + s1[0],
                   s0[1],
                   s1[1],
                   s0[2],
                   s1[2],
                   logits,
                   at::logsumexp(logits, {-1}),
                   logits.argmax(-1),
                   in[3].index_select(0, full.argmax(-1))};
  });
  c.tol = {kFp64, kFd, 2e-2, 3e-2};
  return c;
}

// One TTT step's attention on one rank: block 0 through a local kernel, steps - 1 diagonal
// blocks, GQA (4 query heads on 2 KV heads).
Case ttt_attention_case(const char* kernel, int64_t steps) {
  Case c;
  c.name = fmt::format("ttt_attention {} steps={}", kernel, steps);
  constexpr int64_t S = 7, H = 4, KV = 2, d = 8;
  c.make = [steps](at::Generator& g) {
    Inputs in{diff("q", randn(g, {S, H, d}, 1.5))};
    for (int64_t m = 0; m < steps; ++m)
      in.push_back(diff(fmt::format("k{}", m), randn(g, {S, KV, d}, 1.5)));
    for (int64_t m = 0; m < steps; ++m)
      in.push_back(diff(fmt::format("v{}", m), randn(g, {S, KV, d})));
    return one_rank(std::move(in));
  };
  c.outputs = {{"out"}};
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  c.op = [kernel, steps, scale](const Tensors& in, const Run& run) {
    Tensors ks(in.begin() + 1, in.begin() + 1 + steps), vs(in.begin() + 1 + steps, in.end());
    auto block0 = attention::local_block0(attention::local_kernel(kernel, run.device, run.dtype));
    return Tensors{attention::ttt_attention(in[0], ks, vs, block0, scale, run.kernels.ttt_diag)};
  };
  c.reference = single([steps, scale](const Tensors& in) {
    Tensors ks(in.begin() + 1, in.begin() + 1 + steps), vs(in.begin() + 1 + steps, in.end());
    return Tensors{ttt_attention_ref(in[0], ks, vs, scale)};
  });
  c.tol = {kFp64, kFd, 2e-2, 3e-2};
  if (std::string(kernel) == "cudnn") c.gpu_only = "cuDNN attention runs on the GPU only";
  return c;
}

// Group cases run as threads over CPU tensors (torch/thread_group.h): on CUDA the autograd engine
// runs every rank's backward on its single device thread, where a rank waiting for a peer's
// message blocks that peer's backward. Their GPU path is exercised under mpirun (verify-usp).
constexpr const char* kThreadsCpu = "a thread group communicates CPU tensors only";

// Ulysses exchanges over U ranks: each is an exact permutation of the ranks' rows and heads.
constexpr int64_t kC = 3, kD = 4;

Case scatter_heads_case(int64_t U) {
  Case c;
  c.name = fmt::format("ulysses scatter_heads U={}", U);
  c.ranks = U;
  const int64_t n = 2 * U;  // heads
  c.make = [U, n](at::Generator& g) {
    std::vector<Inputs> r;
    for (int64_t u = 0; u < U; ++u) r.push_back({diff("x", randn(g, {kC, n, kD}))});
    return r;
  };
  c.outputs = {{"y"}};
  c.op = [](const Tensors& in, const Run& run) {
    return Tensors{attention::scatter_heads(in[0], run.comm)};
  };
  c.reference = [U, n](const std::vector<Tensors>& in) {
    Tensors rows;
    for (const auto& r : in) rows.push_back(r[0]);
    auto all = at::cat(rows);  // [C·U, n, d]: the sequence in Ulysses-rank order
    std::vector<Tensors> out;
    for (int64_t u = 0; u < U; ++u) out.push_back({all.narrow(1, u * (n / U), n / U)});
    return out;
  };
  c.tol = {0, kFd, 0, 0};
  c.cpu_only = kThreadsCpu;
  return c;
}

Case gather_heads_case(int64_t U) {
  Case c;
  c.name = fmt::format("ulysses gather_heads U={}", U);
  c.ranks = U;
  c.make = [U](at::Generator& g) {
    std::vector<Inputs> r;
    for (int64_t u = 0; u < U; ++u) r.push_back({diff("y", randn(g, {kC * U, 2, kD}))});
    return r;
  };
  c.outputs = {{"x"}};
  c.op = [](const Tensors& in, const Run& run) {
    return Tensors{attention::gather_heads(in[0], run.comm)};
  };
  c.reference = [U](const std::vector<Tensors>& in) {
    Tensors heads;
    for (const auto& r : in) heads.push_back(r[0]);
    auto all = at::cat(heads, 1);  // [C·U, n, d]: every rank's heads
    std::vector<Tensors> out;
    for (int64_t u = 0; u < U; ++u) out.push_back({all.narrow(0, u * kC, kC)});
    return out;
  };
  c.tol = {0, kFd, 0, 0};
  c.cpu_only = kThreadsCpu;
  return c;
}

// q|k|v of nq = 2U query and nkv = U KV heads; scatter_qkv's backward is gather_qkv.
Case scatter_qkv_case(int64_t U) {
  Case c;
  c.name = fmt::format("ulysses scatter_qkv U={}", U);
  c.ranks = U;
  const int64_t nq = 2 * U, nkv = U;
  c.make = [U, nq, nkv](at::Generator& g) {
    std::vector<Inputs> r;
    for (int64_t u = 0; u < U; ++u) r.push_back({diff("qkv", randn(g, {kC, (nq + 2 * nkv) * kD}))});
    return r;
  };
  c.outputs = {{"q"}, {"k"}, {"v"}};
  c.op = [nq, nkv](const Tensors& in, const Run& run) {
    auto r = attention::scatter_qkv(in[0], nq, nkv, kD, &run.comm);
    return Tensors{r.q, r.k, r.v};
  };
  c.reference = [U, nq, nkv](const std::vector<Tensors>& in) {
    Tensors rows;
    for (const auto& r : in) rows.push_back(r[0].view({kC, nq + 2 * nkv, kD}));
    auto all = at::cat(rows);
    auto part = [&](int64_t first, int64_t heads, int64_t u) {
      return all.narrow(1, first + u * (heads / U), heads / U);
    };
    std::vector<Tensors> out;
    for (int64_t u = 0; u < U; ++u)
      out.push_back({part(0, nq, u), part(nq, nkv, u), part(nq + nkv, nkv, u)});
    return out;
  };
  c.tol = {0, kFd, 0, 0};
  c.cpu_only = kThreadsCpu;
  return c;
}

// gather_qkv on its own: no autograd function (it is scatter_qkv's backward, whose gradient
// check above runs it), so forward only.
Case gather_qkv_case(int64_t U) {
  Case c;
  c.name = fmt::format("ulysses gather_qkv U={}", U);
  c.ranks = U;
  const int64_t hq = 2, hk = 1;
  c.make = [U, hq, hk](at::Generator& g) {
    std::vector<Inputs> r;
    for (int64_t u = 0; u < U; ++u)
      r.push_back({nodiff("dq", randn(g, {kC * U, hq, kD})),
                   nodiff("dk", randn(g, {kC * U, hk, kD})),
                   nodiff("dv", randn(g, {kC * U, hk, kD}))});
    return r;
  };
  c.outputs = {{"dx", Output::value}};
  c.op = [](const Tensors& in, const Run& run) {
    return Tensors{attention::gather_qkv(in[0], in[1], in[2], run.comm)};
  };
  c.reference = [U](const std::vector<Tensors>& in) {
    auto heads = [&](size_t part) {
      Tensors t;
      for (const auto& r : in) t.push_back(r[part]);
      return at::cat(t, 1);  // [C·U, U·heads, d] in head order
    };
    auto all = at::cat({heads(0), heads(1), heads(2)}, 1);
    std::vector<Tensors> out;
    for (int64_t u = 0; u < U; ++u) out.push_back({all.narrow(0, u * kC, kC).reshape({kC, -1})});
    return out;
  };
  c.tol = {0, kFd, 0, 0};
  c.cpu_only = kThreadsCpu;
  return c;
}

// The global rows ring rank g holds: its chunk [g·L, (g+1)·L), or under zigzag_layout the
// half-chunks g and 2R−1−g of the 2R halves (half h: ceil(L/2) rows for even h, else floor).
at::Tensor ring_rows(attention::RingBalance balance, int64_t R, int64_t L, int64_t g) {
  if (balance != attention::RingBalance::zigzag_layout)
    return at::arange(g * L, (g + 1) * L, kLong);
  auto half = [&](int64_t h) {
    const int64_t first = (h / 2) * L + (h % 2 == 0 ? 0 : (L + 1) / 2);
    return at::arange(first, first + (h % 2 == 0 ? (L + 1) / 2 : L / 2), kLong);
  };
  return at::cat({half(g), half(2 * R - 1 - g)});
}

// Ring block 0 under TTT attention over R ranks of L rows each; the reference is the dense TTT
// attention of the whole sequence, its rows taken as each rank holds them.
Case ring_case(attention::RingBalance balance, const char* balance_name, int64_t R, int64_t L,
               int64_t steps, const char* kernel = "reference") {
  Case c;
  c.name = fmt::format("ring_block0 {} R={} L={} steps={}{}", balance_name, R, L, steps,
                       std::string(kernel) == "reference" ? "" : std::string(" ") + kernel);
  c.ranks = R;
  constexpr int64_t H = 4, KV = 2, d = 8;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  c.make = [=](at::Generator& g) {
    std::vector<Inputs> r(R);
    auto add = [&](const std::string& name, at::Tensor full) {
      for (int64_t rank = 0; rank < R; ++rank)
        r[rank].push_back(diff(name, full.index_select(0, ring_rows(balance, R, L, rank))));
    };
    add("q", randn(g, {R * L, H, d}, 1.5));
    for (int64_t m = 0; m < steps; ++m) add(fmt::format("k{}", m), randn(g, {R * L, KV, d}, 1.5));
    for (int64_t m = 0; m < steps; ++m) add(fmt::format("v{}", m), randn(g, {R * L, KV, d}));
    return r;
  };
  c.outputs = {{"out"}};
  c.op = [=](const Tensors& in, const Run& run) {
    Tensors ks(in.begin() + 1, in.begin() + 1 + steps), vs(in.begin() + 1 + steps, in.end());
    auto block0 = attention::ring_block0(
        run.comm, attention::local_kernel(kernel, run.device, run.dtype), balance);
    return Tensors{attention::ttt_attention(in[0], ks, vs, block0, scale, run.kernels.ttt_diag)};
  };
  c.reference = [=](const std::vector<Tensors>& in) {
    Tensors order;
    for (int64_t rank = 0; rank < R; ++rank) order.push_back(ring_rows(balance, R, L, rank));
    auto back = at::argsort(at::cat(order));  // concatenated rank rows -> global order
    auto whole = [&](size_t i) {
      Tensors parts;
      for (const auto& r : in) parts.push_back(r[i]);
      return at::cat(parts).index_select(0, back);
    };
    Tensors ks, vs;
    for (int64_t m = 0; m < steps; ++m) {
      ks.push_back(whole(1 + m));
      vs.push_back(whole(1 + steps + m));
    }
    auto out = ttt_attention_ref(whole(0), ks, vs, scale);
    std::vector<Tensors> per_rank;
    for (int64_t rank = 0; rank < R; ++rank) per_rank.push_back({out.index_select(0, order[rank])});
    return per_rank;
  };
  c.tol = {kFp64, kFd, 2e-2, 3e-2};
  c.cpu_only = kThreadsCpu;
  return c;
}

const std::vector<Case>& cases() {
  using attention::RingBalance;
  static const std::vector<Case> table = [] {
    std::vector<Case> t{to_compute_case(),
                        rms_norm_case(false),
                        rms_norm_case(true),
                        input_projection_case(),
                        linear_case(),
                        rope_case(),
                        swiglu_case(model::MlpRecompute::none, "none"),
                        swiglu_case(model::MlpRecompute::swiglu, "swiglu"),
                        swiglu_case(model::MlpRecompute::full, "full"),
                        fused_loss_case()};
    for (const char* kernel : {"reference", "flash"})
      for (int64_t steps : {1, 2, 3}) t.push_back(ttt_attention_case(kernel, steps));
    t.push_back(ttt_attention_case("cudnn", 3));
    for (int64_t U : {2, 4}) {
      t.push_back(scatter_heads_case(U));
      t.push_back(gather_heads_case(U));
      t.push_back(scatter_qkv_case(U));
      t.push_back(gather_qkv_case(U));
    }
    const std::pair<RingBalance, const char*> balances[] = {
        {RingBalance::none, "none"},
        {RingBalance::zigzag_exchange, "zigzag_exchange"},
        {RingBalance::zigzag_layout, "zigzag_layout"}};
    for (const auto& [balance, name] : balances) {
      t.push_back(ring_case(balance, name, 2, 5, 2));  // odd L: halves of 3 and 2 rows
      t.push_back(ring_case(balance, name, 3, 4, 1));
      t.push_back(ring_case(balance, name, 2, 1, 1));  // one row per rank: an empty half
    }
    t.push_back(ring_case(RingBalance::zigzag_layout, "zigzag_layout", 2, 6, 3, "flash"));
    return t;
  }();
  return table;
}

}  // namespace

TEST_CASE("ops: each custom autograd op vs its fp64 reference, gradients vs finite differences",
          "[ops]") {
  for (const auto& c : cases()) {
    if (c.gpu_only != nullptr) continue;
    DYNAMIC_SECTION(c.name) {
      check_fp64(c);
    }
  }
}

TEST_CASE("ops in bf16 on the CPU (reference kernels) vs the fp64 reference", "[ops][bf16]") {
  const std::vector<std::pair<std::string, Kernels>> tables{
      {"reference", choose_kernels(c10::kCPU, at::kBFloat16)}};
  for (const auto& c : cases()) {
    if (c.gpu_only != nullptr) continue;
    DYNAMIC_SECTION(c.name) {
      check_low(c, c10::kCPU, at::kBFloat16, tables);
    }
  }
}

TEST_CASE("ops in bf16 on the GPU, fused and reference kernels, vs the fp64 reference",
          "[gpu][ops]") {
  REQUIRE(cuda_device_count() > 0);
  const c10::Device dev(c10::kCUDA, 0);
  // The fused table is what training runs there (choose_kernels); the reference one the ATen path.
  const std::vector<std::pair<std::string, Kernels>> tables{
      {"fused", choose_kernels(dev, at::kBFloat16)}, {"reference", Kernels::all(Impl::reference)}};
  REQUIRE(tables[0].second == Kernels::all(Impl::fused));
  static bool listed = false;  // Catch reruns the body once per section
  for (const auto& c : cases()) {
    if (c.cpu_only != nullptr) {
      if (!listed) fmt::print("ops gpu: {} not run here: {}\n", c.name, c.cpu_only);
      continue;
    }
    DYNAMIC_SECTION(c.name) {
      check_low(c, dev, at::kBFloat16, tables);
    }
  }
  listed = true;
}
