// The benchmark loop: the training step of trainer.cpp on random data, with device-side timing.
#include "train/bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "attention/local_attention.h"
#include "attention/ring.h"
#include "attention/ulysses.h"
#include "core/error.h"
#include "data/sharding.h"
#include "dist/device.h"
#include "dist/host_copy.h"
#include "dist/nvtx.h"
#include "model/eagle3.h"
#include "model/vocab.h"
#include "train/optimizer.h"
#include "train/step.h"
#ifdef EAGLET_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace eaglet::train {
namespace {
void device_sync(c10::Device d) {
#ifdef EAGLET_WITH_CUDA
  if (d.is_cuda()) c10::cuda::device_synchronize();
#endif
}
}  // namespace

StepFlops step_flops(const DraftArchConfig& a, int64_t T, int64_t S) {
  const double N = static_cast<double>(S), H = a.hidden_size, Ht = a.target_hidden_size,
               q = a.num_attention_heads * a.head_dim, kv = a.num_key_value_heads * a.head_dim,
               I = a.intermediate_size, Vd = a.draft_vocab_size, Vt = a.vocab_size;
  // Per TTT step, trainable matmuls (forward 2·m·n·k; backward twice that): projections, MLP,
  // lm_head; the q|k|v input's gradient only for its hidden half (the embeddings are frozen and
  // their norm's weight needs no GEMM, model/layers.h). fc once (its input needs no gradient:
  // backward is the weight gradient only). The target rows (no grad): one full-vocabulary GEMM
  // (the draft logits are its columns).
  const double qkv = 2 * N * 2 * H * (q + 2 * kv), o = 2 * N * q * H;
  const double mlp = 3 * 2 * N * H * I;
  const double head = 2 * N * H * Vd;
  const double fc = 2 * N * a.num_aux_hidden_states * Ht * H;
  StepFlops f;
  f.gemm = T * (2.5 * qkv + 3 * (o + mlp + head)) + 2 * fc + 2 * N * Ht * Vt;
  // Causal block 0: QKᵀ and PV over half the square (forward 2·N²·q), backward 2.5× forward.
  f.attention = T * 3.5 * 2 * N * N * q;
  return f;
}

namespace {
// Something to time: `reps` calls of fn make one window.
struct Timed {
  int reps;
  std::function<void()> fn;
};

// Seconds per call of each entry: `reps` warm-up calls each, then `windows` rounds in which each
// entry in turn runs one window; each entry's fastest window: the rate the card reaches at these
// shapes. Taking turns shows every entry the same clock states (the attention overhead compares
// two of them). One short burst varied by ±6% between runs; the median of sustained windows ran
// below the rate the step's own GEMMs reach between its memory-bound kernels (a floor 5% above
// the measured step).
std::vector<double> time_turns(c10::Device device, int windows, const std::vector<Timed>& entries) {
  for (const auto& e : entries)
    for (int i = 0; i < e.reps; ++i) e.fn();
  device_sync(device);
  std::vector<double> fastest(entries.size(), 0);
  for (int w = 0; w < windows; ++w) {
    for (size_t j = 0; j < entries.size(); ++j) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < entries[j].reps; ++i) entries[j].fn();
      device_sync(device);
      const std::chrono::duration<double> spent = std::chrono::steady_clock::now() - t0;
      const double t = spent.count() / entries[j].reps;
      fastest[j] = w == 0 ? t : std::min(fastest[j], t);
    }
  }
  return fastest;
}

// This GPU's rates at the step's shapes: a [n × H]·[H × I] product (the MLP's), and causal flash
// attention forward + backward over min(S, 16384) tokens (the rate is flat beyond that).
std::pair<double, double> measure_rates(const DraftArchConfig& a, int64_t n, int64_t S,
                                        c10::Device device, at::ScalarType dtype) {
  auto on = at::TensorOptions().device(device).dtype(dtype);
  auto x = at::randn({n, a.hidden_size}, on),
       w = at::randn({a.intermediate_size, a.hidden_size}, on);
  auto gemm_call = [&] { (void)at::mm(x, w.t()); };
  const double gemm_s = time_turns(device, 5, {{10, gemm_call}})[0];
  const double gemm = 2.0 * n * a.hidden_size * a.intermediate_size / gemm_s;
  const int64_t L = std::min<int64_t>(S, 16384), heads = a.num_attention_heads, d = a.head_dim;
  auto q = at::randn({1, heads, L, d}, on), k = at::randn({1, heads, L, d}, on),
       v = at::randn({1, heads, L, d}, on), dout = at::randn({1, heads, L, d}, on);
  const auto& kernel = attention::local_kernel("auto", device, dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto attend = [&] {
    auto r = attention::attend(kernel, q, k, v, true, scale);
    (void)attention::attend_backward(kernel, dout, q, k, v, r.out, r.lse, r.state, true, scale);
  };
  const double attn_s = time_turns(device, 3, {{3, attend}})[0];
  const double attn = 3.5 * 2.0 * L * L * heads * d / attn_s;
  return {gemm, attn};
}

// Block 0 alone, forward + backward, as the TTT step runs it (q|k|v scattered by one Ulysses
// all-to-all, the ring provider, out gathered; backward: dout scattered, dq|dk|dv gathered by
// one), against one GPU's causal attention over all S rows and all heads. Returns {usp ms, local
// ms}; collective.
std::pair<double, double> time_attention(const Config& cfg, const ProcessGroups& groups,
                                         const TrainStep& step, int64_t C, int64_t S) {
  const auto& a = cfg.model.config;
  const auto device = groups.device();
  const int64_t H = a.num_attention_heads, KV = a.num_key_value_heads, d = a.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto on = at::TensorOptions().device(device).dtype(step.dtype());
  const auto& kernel = step.attention_kernel();
  auto& uly = groups.group(GroupKind::ulysses);
  const auto& block0 = step.ttt().block0;  // as the training step runs it
  auto to_k = [](const at::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
  auto from_k = [](const at::Tensor& x) { return x.squeeze(0).transpose(0, 1).contiguous(); };
  auto sc = [&](const at::Tensor& x) {
    return uly.size() > 1 ? attention::scatter_heads(x, uly) : x;
  };
  auto ga = [&](const at::Tensor& x) {
    return uly.size() > 1 ? attention::gather_heads(x, uly) : x;
  };
  auto qkv = at::randn({C, (H + 2 * KV) * d}, on), dout = at::randn({C, H, d}, on);
  auto usp = [&] {
    auto parts = attention::scatter_qkv(qkv, H, KV, d, &uly);
    // RoPE's out-of-place write in the step, here a plain copy: q and k reach attention contiguous.
    auto qs = parts.q.contiguous(), ks = parts.k.contiguous(), vs = parts.v;
    auto r = block0->forward(to_k(qs), to_k(ks), to_k(vs), scale);
    (void)ga(from_k(r.out));
    auto g = block0->backward(to_k(sc(dout)), to_k(qs), to_k(ks), to_k(vs), r.out, r.lse, r.state,
                              scale);
    if (uly.size() > 1) (void)attention::gather_qkv(from_k(g[0]), from_k(g[1]), from_k(g[2]), uly);
  };
  auto qf = at::randn({1, H, S, d}, on), kf = at::randn({1, KV, S, d}, on),
       vf = at::randn({1, KV, S, d}, on), df = at::randn({1, H, S, d}, on);
  auto local = [&] {
    auto r = attention::attend(kernel, qf, kf, vf, true, scale);
    (void)attention::attend_backward(kernel, df, qf, kf, vf, r.out, r.lse, r.state, true, scale);
  };
  // In turns: block 0 (2 calls a window) and the single-GPU attention (1) see the same clocks.
  const auto t = time_turns(device, 3, {{2, usp}, {1, local}});
  return {t[0] * 1e3, t[1] * 1e3 / static_cast<double>(groups.layout().sp())};
}

}  // namespace

std::vector<int64_t> length_mix(const std::string& name, int64_t count) {
  EAGLET_CHECK(name == "sharegpt-like", "bench: unknown --length-mix '{}' (known: sharegpt-like)",
               name);
  std::mt19937_64 rng(20261204);
  std::lognormal_distribution<double> dist(std::log(1200.0), 0.6);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < count; ++i)
    out.push_back(std::clamp<int64_t>(std::llround(dist(rng)), 512, 8192));
  return out;
}

std::vector<int64_t> lengths_from(const std::string& path) {
  std::ifstream in(path);
  EAGLET_CHECK(in.good(), "bench: cannot open --lengths-from {}", path);
  std::vector<int64_t> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    int64_t v = 0;
    try {
      if (line.find('{') != std::string::npos)
        v = nlohmann::json::parse(line).at("seq_len").get<int64_t>();
      else
        v = std::stoll(line);
    } catch (const std::exception& e) {
      EAGLET_FAIL("bench: {}:{}: expected a length or a manifest line with seq_len ({})", path, n,
                  e.what());
    }
    EAGLET_CHECK(v >= 1, "bench: {}:{}: length {} must be at least 1", path, n, v);
    out.push_back(v);
  }
  EAGLET_CHECK(!out.empty(), "bench: {} holds no lengths", path);
  return out;
}

namespace {
// The optimizer step as the trainer runs it: launched, and its gradient norm read back once the
// next step is queued behind it (one host sync a step; the device never drains between steps).
class LaggedNorm {
 public:
  LaggedNorm(AdamW& optimizer, double lr) : optimizer_(optimizer), lr_(lr) {}
  ~LaggedNorm() { read(); }
  void launch() {
    HostCopy norm(optimizer_.launch_step(lr_).to(at::kDouble));
    read();
    pending_ = norm;
  }
  void read() {
    if (pending_.defined()) optimizer_.account(pending_.get().item<double>(), lr_);
    pending_ = HostCopy();
  }

 private:
  AdamW& optimizer_;
  double lr_;
  HostCopy pending_;
};
}  // namespace

BenchResult run_mix_bench(const Config& cfg, const ProcessGroups& groups,
                          const BenchOptions& opt) {
  const auto& arch = cfg.model.config;
  const auto device = groups.device();
  const TrainStep train_step(cfg, groups);
  const auto dtype = train_step.dtype();
  const auto& layout = groups.layout();
  const auto& c = groups.coord();
  const int64_t T = cfg.training.ttt_length, P = layout.sp(), U = layout.ulysses;
  EAGLET_CHECK(!opt.lengths.empty(), "bench: a length mix without lengths");
  EAGLET_CHECK(!opt.pack || layout.ring == 1,
               "bench: packed samples need parallel.ring = 1 (this layout has ring {})",
               layout.ring);
  // The documents of warmup + steps packed steps, in order.
  std::vector<std::vector<int64_t>> packs;
  size_t next = 0;
  auto document = [&] {
    return std::min(opt.lengths[next++ % opt.lengths.size()], opt.seq_len);
  };
  int64_t pending = document();
  for (int64_t i = 0; i < opt.warmup + opt.steps; ++i) {
    std::vector<int64_t> pack;
    for (int64_t used = 0; used + pending <= opt.seq_len; pending = document()) {
      pack.push_back(pending);
      used += pending;
    }
    packs.push_back(std::move(pack));
  }
  // Samples to train, one per step: the packs, or their documents one by one.
  std::vector<std::vector<int64_t>> warm, timed;
  for (size_t i = 0; i < packs.size(); ++i) {
    auto& to = static_cast<int64_t>(i) < opt.warmup ? warm : timed;
    if (opt.pack)
      to.push_back(packs[i]);
    else
      for (int64_t n : packs[i]) to.push_back({n});
  }
  auto gen = at::detail::createCPUGenerator(7);
  auto on = at::TensorOptions().device(device);
  auto counts = at::randint(0, 1000, {arch.vocab_size}, gen, at::TensorOptions().dtype(at::kLong));
  auto vocab = model::vocab_from_counts(counts, arch.draft_vocab_size);
  auto full = (at::randn({arch.vocab_size, arch.target_hidden_size}, on.dtype(dtype)) * 0.02);
  auto target = model::loss_target(full, vocab, device);
  // This rank's shard of a sample of these documents, made before the clock starts.
  auto make_input = [&](const std::vector<int64_t>& docs) {
    const int64_t L = std::accumulate(docs.begin(), docs.end(), int64_t{0});
    const auto g = data::shard_geometry(L, L, P, T);
    model::ShardInput in;
    const int64_t rows = g.local_len;
    in.hs = at::randn({rows, arch.num_aux_hidden_states * arch.target_hidden_size},
                      on.dtype(dtype));
    in.lhs = at::randn({rows, arch.target_hidden_size}, on.dtype(dtype));
    in.ids = at::randint(0, arch.vocab_size, {rows}, on.dtype(at::kLong));
    in.loss_mask = at::ones({rows}, on.dtype(at::kFloat));
    in.positions = data::ring_chunk_positions(g, U, c.ring);
    if (docs.size() > 1) data::pack_documents(in, docs, g, c.sp);
    in.positions = in.positions.to(device);
    return in;
  };
  std::vector<model::ShardInput> warm_in, timed_in;
  for (const auto& d : warm) warm_in.push_back(make_input(d));
  for (const auto& d : timed) timed_in.push_back(make_input(d));

  auto weights = model::init_weights(arch, cfg.training.seed, device);
  weights.embed_tokens = weights.embed_tokens.to(dtype);
  AdamW optimizer(weights.trainable(), cfg.training);
  auto& world = groups.host_group(GroupKind::world);
  LaggedNorm lagged(optimizer, cfg.training.lr);
  auto one_step = [&](model::ShardInput in) {
    auto obj = train_step.forward(weights, target, std::move(in));
    obj.total.backward();
    train_step.sync_gradients(optimizer);
    lagged.launch();
  };
  for (auto& in : warm_in) one_step(in);
  device_sync(device);
  world.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& in : timed_in) one_step(in);
  device_sync(device);
  world.barrier();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BenchResult r;
  for (int64_t i = opt.warmup; i < static_cast<int64_t>(packs.size()); ++i) {
    r.mix_documents += static_cast<int64_t>(packs[static_cast<size_t>(i)].size());
    for (int64_t n : packs[static_cast<size_t>(i)]) r.mix_tokens += n;
  }
  r.mix_steps = static_cast<int64_t>(timed.size());
  r.ms_per_step = s * 1e3 / static_cast<double>(r.mix_steps);
  r.tokens_per_s = static_cast<double>(r.mix_tokens * layout.dp()) / s;
  r.peak_gib = all_reduce_scalar(world, peak_memory_gib(device), ReduceOp::max);
  return r;
}

BenchResult run_bench(const Config& cfg, const ProcessGroups& groups, const BenchOptions& opt) {
  const auto& arch = cfg.model.config;
  const auto device = groups.device();
  const TrainStep train_step(cfg, groups);
  const auto dtype = train_step.dtype();
  const auto& layout = groups.layout();
  const auto& c = groups.coord();
  const int64_t T = cfg.training.ttt_length, P = layout.sp(), U = layout.ulysses;
  const int64_t C = (opt.seq_len + P - 1) / P, local = C + T;
  auto gen = at::detail::createCPUGenerator(7);
  auto on = at::TensorOptions().device(device);

  // Random target head, vocabulary and shard of the right shapes, made on the device.
  auto counts = at::randint(0, 1000, {arch.vocab_size}, gen, at::TensorOptions().dtype(at::kLong));
  auto vocab = model::vocab_from_counts(counts, arch.draft_vocab_size);
  auto full = (at::randn({arch.vocab_size, arch.target_hidden_size}, on.dtype(dtype)) * 0.02);
  auto target = model::loss_target(full, vocab, device);
  auto make_input = [&] {
    model::ShardInput in;
    in.hs = at::randn({local, arch.num_aux_hidden_states * arch.target_hidden_size}, on.dtype(dtype));
    in.lhs = at::randn({local, arch.target_hidden_size}, on.dtype(dtype));
    in.ids = at::randint(0, arch.vocab_size, {local}, on.dtype(at::kLong));
    in.loss_mask = at::ones({local}, on.dtype(at::kFloat));
    in.positions = at::arange(c.ring * C * U, (c.ring + 1) * C * U, on.dtype(at::kLong));
    return in;
  };
  auto in = make_input();

  auto weights = model::init_weights(arch, cfg.training.seed, device);
  weights.embed_tokens = weights.embed_tokens.to(dtype);  // as the trainer keeps it
  AdamW optimizer(weights.trainable(), cfg.training);
  const auto& topt = train_step.ttt();
  auto& world = groups.host_group(GroupKind::world);  // host-side barriers and maxima
  LaggedNorm lagged(optimizer, cfg.training.lr);

  // One step in its four phases; `between` runs after each (the split's device waits, or nothing).
  auto phased_step = [&](const std::function<void(int)>& between) {
    model::Objective obj;
    if (topt.zigzag_layout) {
      // As in training, the step lets its shard go once the rows have moved to the zigzag
      // layout; a fresh one (made on the device, timed with the step) stands in for the next
      // sample.
      obj = train_step.forward(weights, target, std::move(in));
      in = make_input();
    } else {
      obj = train_step.forward(weights, target, in);
    }
    between(0);
    {
      NvtxRange range("backward");
      obj.total.backward();
    }
    between(1);
    train_step.sync_gradients(optimizer);
    between(2);
    lagged.launch();
    between(3);
  };
  auto one_step = [&] { phased_step([](int) {}); };
  for (int64_t i = 0; i < opt.warmup; ++i) one_step();
  device_sync(device);
  world.barrier();
  const auto t0 = std::chrono::steady_clock::now();
  // Per step: time between the returns of consecutive steps (each reads the previous step's
  // gradient norm back after launching its optimizer step, as the trainer reads its metrics: one
  // host sync a step, waiting for the step before).
  double fastest = 1e30, slowest = 0;
  auto last = t0;
  for (int64_t i = 0; i < opt.steps; ++i) {
    one_step();
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last).count();
    fastest = std::min(fastest, ms);
    slowest = std::max(slowest, ms);
    last = now;
  }
  device_sync(device);
  world.barrier();
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / opt.steps;

  BenchResult r;
  if (opt.split) {  // one more step, the device waited for after each phase (rank 0's clock)
    device_sync(device);
    world.barrier();
    auto since = std::chrono::steady_clock::now();
    phased_step([&](int phase) {
      device_sync(device);
      const auto now = std::chrono::steady_clock::now();
      r.split_ms[phase] = std::chrono::duration<double, std::milli>(now - since).count();
      since = now;
    });
    if (layout.world > 1) {  // and one with each collective timed alone, phase by phase
      device_sync(device);
      world.barrier();
      collectives::start(/*timed=*/true, device);
      phased_step([&](int phase) {
        r.split_collectives[phase] = collectives::stop();
        collectives::start(true, device);
      });
      collectives::stop();
    }
  }

  if (!opt.profile.empty()) {  // one more step, traced (CPU ops and, on GPU, kernels)
    namespace prof = torch::profiler::impl;
    std::set<prof::ActivityType> acts{prof::ActivityType::CPU};
    if (device.is_cuda()) acts.insert(prof::ActivityType::CUDA);
    prof::ProfilerConfig pc(prof::ProfilerState::KINETO, /*report_input_shapes=*/true);
    torch::autograd::profiler::prepareProfiler(pc, acts);
    torch::autograd::profiler::enableProfiler(pc, acts);
    one_step();
    device_sync(device);
    auto trace = torch::autograd::profiler::disableProfiler();
    if (groups.world_rank() == 0) trace->save(opt.profile);
  }

  r.ms_per_step = s * 1e3;
  r.fastest_step_ms = fastest;
  r.slowest_step_ms = slowest;
  r.tokens_per_s = static_cast<double>(opt.seq_len * layout.dp()) / s;
  r.peak_gib = all_reduce_scalar(world, peak_memory_gib(device), ReduceOp::max);
  const auto flops = step_flops(arch, T, opt.seq_len);
  r.tflop_per_step = flops.total() / 1e12;
  r.mfu = r.tflop_per_step / s / (opt.peak_tflops * static_cast<double>(P));
  if (opt.attention) {
    auto [usp, local] = time_attention(cfg, groups, train_step, C, opt.seq_len);
    r.usp_attn_ms = all_reduce_scalar(world, usp, ReduceOp::max);
    r.local_attn_ms = local;
  }
  if (opt.floor && device.is_cuda()) {
    auto [gemm, attn] = measure_rates(arch, C, opt.seq_len, device, dtype);
    r.gemm_tflops = gemm / 1e12;
    r.attn_tflops = attn / 1e12;
    r.floor_ms = (flops.gemm / gemm + flops.attention / attn) / static_cast<double>(P) * 1e3;
  }
  return r;
}

}  // namespace eaglet::train
