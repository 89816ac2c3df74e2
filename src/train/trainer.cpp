// The training loop and what it needs around it: target head, vocabulary, weights, resume, data
// stream, metrics and checkpoints.
#include "train/trainer.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>

#include "core/error.h"
#include "data/manifest.h"
#include "data/prefetcher.h"
#include "data/sampler.h"
#include "data/shard_reader.h"
#include "data/sharding.h"
#include "data/store.h"
#include "dist/device.h"
#include "dist/host_copy.h"
#include "dist/nvtx.h"
#include "dist/watchdog.h"
#include "io/files.h"
#include "io/hf_target.h"
#include "io/safetensors.h"
#include "model/draft_io.h"
#include "model/vocab.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/optimizer.h"
#include "train/step.h"

namespace eaglet::train {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_preempt(int sig) {
  g_signal = sig;
}

}  // namespace

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_preempt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

namespace {

// True on every rank when a signal reached any rank (one host all-reduce per step).
bool preempted_anywhere(const ProcessGroups& groups) {
  auto any =
      at::full({1}, static_cast<int64_t>(g_signal.load()), at::TensorOptions().dtype(at::kLong));
  groups.host_group(GroupKind::world).all_reduce(any, ReduceOp::max);
  return any.item<int64_t>() != 0;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// t2d/d2t: a given file, the init_from draft's, identity when Vd == Vt, else counted from the
// loss-masked tokens of the first data.vocab_samples samples (each rank counts its own rows of
// the samples its replica would read, then one all-reduce over the world).
model::VocabMap build_vocab(const Config& cfg, data::Store& store, data::ManifestReader& manifest,
                            const ProcessGroups& groups) {
  const auto& arch = cfg.model.config;
  if (!cfg.model.vocab_mapping.empty())
    return model::load_vocab(cfg.model.vocab_mapping, arch.vocab_size, arch.draft_vocab_size);
  if (!cfg.model.init_from.empty() &&
      io::is_file(io::join_path(cfg.model.init_from, "model.safetensors"))) {
    io::SafetensorsFile f(io::join_path(cfg.model.init_from, "model.safetensors"));
    if (f.has("d2t") && f.has("t2d"))
      return model::load_vocab(cfg.model.init_from, arch.vocab_size, arch.draft_vocab_size);
  }
  if (arch.draft_vocab_size == arch.vocab_size) return model::identity_vocab(arch.vocab_size);
  const auto& layout = groups.layout();
  const auto& c = groups.coord();
  auto counts = at::zeros({arch.vocab_size}, at::TensorOptions().dtype(at::kLong));
  const int64_t n = std::min(manifest.size(), cfg.data.vocab_samples);
  EAGLET_CHECK(n > 0,
               "model.vocab_mapping: no sample to count the draft vocabulary from yet (data.follow "
               "on an empty "
               "manifest {}); give a t2d/d2t file, an init_from draft with one, or "
               "draft_vocab_size = vocab_size",
               manifest.path());
  for (int64_t i = c.dp; i < n; i += layout.dp()) {
    watch::phase("start-up: counting the draft vocabulary", -1, i);
    const auto& rec = manifest.at(i);
    if (!rec.ok()) continue;
    auto g = data::shard_geometry(rec.entry.seq_len, cfg.data.max_seq_length, layout.sp(),
                                  cfg.training.ttt_length);
    auto own = g.own_rows(c.sp);
    if (own.size() <= 0) continue;
    auto ids = data::read_shard_ids(store, rec.entry, g, c.sp, "vocabulary count");
    auto mask = data::shard_loss_mask(data::unpack_loss_mask(rec.entry.packed_loss_mask), g, c.sp);
    model::count_loss_tokens(counts, ids.narrow(0, 0, own.size()), mask.narrow(0, 0, own.size()));
  }
  groups.host_group(GroupKind::world).all_reduce(counts, ReduceOp::sum);
  spdlog::info("vocabulary: top {} of {} tokens by loss-masked frequency over {} samples",
               arch.draft_vocab_size, arch.vocab_size, n);
  return model::vocab_from_counts(counts, arch.draft_vocab_size);
}

// --dump-grads: the synced gradients of optimizer step `step` (before clipping, fp32, the same
// on every rank after the world all-reduce) written by rank 0 as DIR/grads_<8 digits>.safetensors
// under the weights' SGLang names. For the equivalence checks across layouts (tests/mpi).
void dump_gradients(const std::string& dir, int64_t step, const model::Eagle3Weights& w,
                    bool rank0) {
  if (!rank0) return;
  std::vector<std::pair<std::string, at::Tensor>> grads;
  for (const auto& [name, t] : w.trainable()) grads.emplace_back(name, t->grad());
  io::make_dirs(dir);
  io::write_safetensors(io::join_path(dir, fmt::format("grads_{:08d}.safetensors", step)), grads);
}

struct StepMetrics {
  at::Tensor loss_k, acc_k, count_k;  // summed over micro-batches (SP-global already)
  int64_t tokens = 0, neutralised = 0;
  double data_s = 0;
  std::vector<std::string> keys;  // this replica's samples
};

// What this run trained on (all replicas; the same on every rank), for the end-of-run summary and
// data.max_bad_fraction. A sample is bad when it was neutralised (a data problem under
// on_error=skip, or no loss token) or belonged to a skipped optimizer step.
struct RunTally {
  int64_t samples = 0, bad = 0, skipped_steps = 0;
  double bad_fraction() const {
    return samples > 0 ? static_cast<double>(bad) / static_cast<double>(samples) : 0.0;
  }
};

// "96 samples, 24 bad (25.0%): 12 non-finite hidden state, 12 no loss token; 1 skipped optimizer
// step". Collective over the world (sums the SP groups' identical counts, divided by P).
std::string tally_text(const RunTally& t, const data::ShardReader& reader, const MpiEnv& env,
                       int64_t sp_size) {
  std::vector<int64_t> counts(reader.skipped_by_kind().begin(), reader.skipped_by_kind().end());
  counts.push_back(reader.empty_samples());
  counts = env.sum(counts);
  std::string causes;
  for (size_t k = 1; k < counts.size(); ++k) {
    const int64_t n = counts[k] / sp_size;
    if (n == 0) continue;
    const char* what = k + 1 == counts.size()
                           ? "no loss token"
                           : data::problem_text(static_cast<data::ProblemKind>(k));
    causes += fmt::format("{}{} {}", causes.empty() ? "" : ", ", n, what);
  }
  return fmt::format("{} samples, {} bad ({:.1f}%){}{}; {} skipped optimizer step(s)", t.samples,
                     t.bad, 100.0 * t.bad_fraction(), causes.empty() ? "" : ": ", causes,
                     t.skipped_steps);
}

// Held-out evaluation: every eval sample once, replica dp taking positions dp, dp + D, ...;
// forward only; token-weighted over the world.
struct EvalResult {
  std::vector<double> loss_k, acc_k;
  int64_t samples = 0;
};

EvalResult evaluate(data::ShardReader& reader, data::ManifestReader& manifest,
                    const model::Eagle3Weights& w, const DraftArchConfig& arch,
                    const model::LossTarget& target, const TrainStep& step,
                    const ProcessGroups& groups) {
  c10::NoGradGuard no_grad;
  const auto& topt = step.ttt();
  const int64_t D = groups.layout().dp(), dp = groups.coord().dp, T = topt.ttt_length;
  at::Tensor sums;  // [3, T]: loss·count, acc·count, count
  for (int64_t i = dp; i < manifest.size(); i += D) {
    watch::phase("evaluation", -1, i);
    auto sample = reader.read(manifest.at(i), i);
    auto obj = model::ttt_forward(w, arch, target, std::move(sample.input), topt);
    auto row =
        at::stack({obj.loss_k * obj.count_k, obj.acc_k * obj.count_k, obj.count_k}).to(at::kFloat);
    sums = sums.defined() ? sums + row : row;
  }
  if (!sums.defined())
    sums = at::zeros({3, T}, at::TensorOptions().dtype(at::kFloat).device(groups.device()));
  sums = sums.contiguous();
  groups.group(GroupKind::dp).all_reduce(sums, ReduceOp::sum);
  auto host = sums.cpu();
  EvalResult r;
  for (int64_t k = 0; k < T; ++k) {
    const double cnt = std::max(host[2][k].item<double>(), 1.0);
    r.loss_k.push_back(host[0][k].item<double>() / cnt);
    r.acc_k.push_back(host[1][k].item<double>() / cnt);
  }
  r.samples = manifest.size();
  return r;
}

}  // namespace

int run_training(const Config& cfg, const MpiEnv& env, const ProcessGroups& groups,
                 const TrainOptions& opt) {
  DraftArchConfig arch = cfg.model.config;  // + the data's aux layer ids, below
  const auto& layout = groups.layout();
  const auto& coord = groups.coord();
  const auto device = groups.device();
  const TrainStep train_step(cfg, groups);  // dtype, kernels, TTT options, gradient sync
  const auto dtype = train_step.dtype();
  const int64_t T = cfg.training.ttt_length, D = layout.dp(), accum = train_step.grad_accum();
  const bool rank0 = env.rank() == 0;
  install_signal_handlers();

  // --- data source and target ------------------------------------------------------------------
  auto store = data::open_store(cfg.data);
  if (rank0 && cfg.data.store == "mooncake" && !cfg.data.consume)
    spdlog::warn(
        "data.store=mooncake with data.consume=false: samples stay in the store after they are "
        "read, so it fills up unless something removes them (data.consume=true removes each "
        "sample once read; a rerun then finds them gone)");
  data::ManifestReader manifest(data::manifest_path(cfg.data), data::manifest_expect(cfg));
  watch::phase("start-up: manifest, target, vocabulary, weights");
  env.agree([&] {
    manifest.poll();
    if (!cfg.data.follow)
      EAGLET_CHECK(manifest.size() > 0,
                   "data.manifest {}: no samples (write some with eaglet data synth or put)",
                   manifest.path());
    if (cfg.data.on_error == "fail" && !manifest.first_error().empty())
      EAGLET_FAIL("{}", manifest.first_error());
  });
  // The aux layers the data were captured with (the manifest's aux_layer_ids, e.g. from
  // produce_hf or data ingest) go into every checkpoint's config.json, and so into the export,
  // unless model.config names them itself.
  for (int64_t i = 0; i < manifest.size(); ++i) {
    const auto& rec = manifest.at(i);
    if (!rec.ok() || rec.entry.aux_layer_ids.empty()) continue;
    if (arch.aux_layer_ids.empty())
      arch.aux_layer_ids = rec.entry.aux_layer_ids;
    else if (rank0 && arch.aux_layer_ids != rec.entry.aux_layer_ids)
      spdlog::warn("model.config names aux layer ids [{}], the manifest's samples [{}]: the "
                   "export names model.config's",
                   fmt::join(arch.aux_layer_ids, ", "), fmt::join(rec.entry.aux_layer_ids, ", "));
    break;
  }
  io::TargetHead head;
  env.agree([&] {
    EAGLET_CHECK(!cfg.model.target.empty(),
                 "model.target: the target model's folder is needed (its lm_head defines "
                 "the loss targets); eaglet data synth writes one under data.path/target");
    head = io::load_target_head(cfg.model.target, cfg.model.embedding_key, cfg.model.lm_head_key,
                                cfg.model.norm_key);
    EAGLET_CHECK(
        head.lm_head.size(0) == arch.vocab_size && head.lm_head.size(1) == arch.target_hidden_size,
        "model.target {}: lm_head is [{}, {}], model.config says vocab_size {} and "
        "target_hidden_size {}",
        cfg.model.target, head.lm_head.size(0), head.lm_head.size(1), arch.vocab_size,
        arch.target_hidden_size);
    EAGLET_CHECK(head.embed_tokens.size(1) == arch.hidden_size,
                 "model.target {}: embed_tokens is [{}, {}] but the draft's hidden_size is {}",
                 cfg.model.target, head.embed_tokens.size(0), head.embed_tokens.size(1),
                 arch.hidden_size);
  });
  model::VocabMap vocab;
  env.agree([&] { vocab = build_vocab(cfg, *store, manifest, groups); });

  // --- model, optimizer, resume ------------------------------------------------------------------
  auto weights = model::init_weights(arch, cfg.training.seed, device, head.embed_tokens);
  // The frozen embedding is only gathered and cast to the compute dtype: store it that way (bitwise
  // the same rows, half the memory in bf16: 1.2 GB less for a 152k x 4096 vocabulary).
  weights.embed_tokens = weights.embed_tokens.to(dtype);
  if (!cfg.model.init_from.empty())
    env.agree([&] { model::load_draft(cfg.model.init_from, arch, weights, nullptr); });
  AdamW optimizer(weights.trainable(), cfg.training);
  int64_t start_step = 0, cursor = 0, skipped_steps = 0;
  std::string resume_dir;
  env.agree([&] {
    if (rank0)  // holds output_dir's lock: every temporary of a checkpoint save is stale
      for (const auto& path : remove_stale_temporaries(cfg.output_dir))
        spdlog::warn("removed {}, left by an interrupted checkpoint save", path);
    if (!opt.resume.empty()) resume_dir = resolve_resume(cfg.output_dir, opt.resume);
    if (resume_dir.empty()) return;
    const auto state = load_checkpoint(resume_dir, arch, weights, vocab, optimizer);
    EAGLET_CHECK(state.sp_size == layout.sp(),
                 "checkpoint {} was trained with sequence-parallel size {}; this run has {} (the "
                 "data cursor and the store's shards depend on it)",
                 resume_dir, state.sp_size, layout.sp());
    start_step = state.step;
    cursor = state.cursor;
    skipped_steps = state.skipped_steps;
  });
  if (!resume_dir.empty())
    spdlog::info("resumed from {}: step {}, data cursor {}", resume_dir, start_step, cursor);
  else if (opt.resume == "auto")
    spdlog::info("no checkpoint under {}/checkpoints: starting from scratch", cfg.output_dir);
  else if (io::is_file(io::join_path(cfg.output_dir, "checkpoints/latest")))
    spdlog::warn(
        "{}/checkpoints holds an earlier run's checkpoints: starting from scratch, as "
        "asked (--resume auto continues a run); its steps will be overwritten",
        cfg.output_dir);

  auto target = model::loss_target(head.lm_head.to(device, dtype), vocab, device);
  head = {};  // the CPU copies are no longer needed

  // --- schedule --------------------------------------------------------------------------------
  const int64_t n = manifest.size();
  data::Sampler sampler(cfg.data.follow ? 0 : n, cfg.training.num_epochs, cfg.training.seed,
                        /*shuffle=*/true);
  env.agree([&] {
    EAGLET_CHECK(cfg.data.follow || cursor <= sampler.total(),
                 "checkpoint {}: trainer_state.json's \"cursor\" is {}, beyond this run's {} "
                 "samples ({} in the manifest x training.num_epochs {}): another data set?",
                 resume_dir, cursor, sampler.total(), n, cfg.training.num_epochs);
  });
  int64_t total_steps = cfg.training.max_steps;
  if (!cfg.data.follow) {
    const int64_t available = (sampler.total() - cursor) / (D * accum) + start_step;
    if (total_steps > available)
      spdlog::info(
          "training.max_steps {} capped at {}: training.num_epochs {} of {} samples give "
          "{} samples, {} per step",
          total_steps, available, cfg.training.num_epochs, n, sampler.total(), D * accum);
    total_steps = total_steps > 0 ? std::min(total_steps, available) : available;
  }
  EAGLET_CHECK(total_steps > start_step || start_step > 0,
               "{} samples cannot fill one step of {} replicas x {} accumulation", n, D, accum);

  data::ShardReader reader(*store, groups.host_group(GroupKind::sp),
                           data::reader_options(cfg, layout, coord, device, dtype));
  data::Prefetcher prefetcher(reader,
                              data::replica_source(manifest, sampler, coord.dp, D, cursor,
                                                   std::chrono::seconds(cfg.data.manifest_wait_s)),
                              cfg.data.prefetch);

  const auto step_w = model::step_weights(cfg.training);
  double weight_sum = 0;
  for (double w : step_w) weight_sum += w;

  // Held-out samples: read in full up front, evaluated every training.eval_interval steps.
  std::unique_ptr<data::ManifestReader> eval_manifest;
  if (!cfg.data.eval_manifest.empty()) {
    env.agree([&] {
      eval_manifest = std::make_unique<data::ManifestReader>(cfg.data.eval_manifest,
                                                             data::manifest_expect(cfg));
      eval_manifest->poll();
      EAGLET_CHECK(eval_manifest->size() > 0, "data.eval_manifest {}: no samples",
                   cfg.data.eval_manifest);
    });
  }
  data::ShardReader eval_reader(*store, groups.host_group(GroupKind::sp),
                                data::reader_options(cfg, layout, coord, device, dtype));

  std::unique_ptr<MetricsLog> metrics;
  if (rank0)
    metrics =
        std::make_unique<MetricsLog>(io::join_path(cfg.output_dir, "metrics.jsonl"), start_step);
  spdlog::info(
      "training: steps {}..{} of {}, {} replicas x {} accumulation, {} samples in the manifest{}, "
      "{} on {}",
      start_step + 1, total_steps, total_steps, D, accum, n, cfg.data.follow ? " (following)" : "",
      c10::toString(dtype), device_description(device));

  auto run_eval = [&](int64_t step) {
    if (!eval_manifest) return;
    watch::phase("evaluation", step);
    auto r = evaluate(eval_reader, *eval_manifest, weights, arch, target, train_step, groups);
    if (!rank0) return;
    double loss = 0, tau = 0, prod = 1;
    for (int64_t k = 0; k < T; ++k) {
      loss += step_w[k] * r.loss_k[k] / weight_sum;
      prod *= r.acc_k[k];
      tau += prod;
    }
    metrics->write({{"eval", true},
                    {"step", step},
                    {"loss", loss},
                    {"loss_ttt", r.loss_k},
                    {"acc_ttt", r.acc_k},
                    {"accept_len", tau},
                    {"samples", r.samples}});
    std::string accs;
    for (double a : r.acc_k) accs += fmt::format("{}{:.2f}", accs.empty() ? "" : " ", a);
    spdlog::info("eval at step {}: loss {:.4f} acc [{}] accept {:.2f} over {} held-out samples",
                 step, loss, accs, tau, r.samples);
  };

  auto save = [&](int64_t step) {
    nlohmann::json state = {{"step", step},
                            {"cursor", cursor},
                            {"epoch", sampler.epoch_at(std::max<int64_t>(cursor - 1, 0))},
                            {"skipped_steps", skipped_steps},
                            {"total_steps", total_steps},
                            {"seed", cfg.training.seed},
                            {"world_size", layout.world},
                            {"sp_size", layout.sp()},
                            {"ulysses", layout.ulysses},
                            {"ring", layout.ring},
                            {"dp_size", D},
                            {"config", to_yaml(cfg)}};
    watch::phase("checkpoint", step);
    std::string dir;
    if (rank0) metrics->check();  // a metrics file that cannot be written stops the run here
    if (rank0)
      dir = save_checkpoint(cfg.output_dir, step, weights, arch, vocab, optimizer, state,
                            cfg.checkpoint.keep);
    groups.host_group(GroupKind::world)
        .barrier();  // nobody exits before the checkpoint is in place
    if (rank0) spdlog::info("checkpoint {}", dir);
  };

  const double t_start = now_s();
  int64_t step = start_step;
  bool preempted = false, too_bad = false;
  RunTally tally;
  const double max_bad =
      cfg.data.max_bad_fraction * static_cast<double>((total_steps - start_step) * D * accum);
  // A data wait is bounded by data.manifest_wait_s; the watchdog allows it that long.
  const int64_t data_wait_s = cfg.data.manifest_wait_s + cfg.runtime.timeout_s;
  // A launched step whose metrics are still on the device. It is read back once the next step is
  // queued behind it, so the device does not drain between steps while the host reads the data,
  // logs and checks for pre-emption; or earlier, where something needs it (a checkpoint, an
  // evaluation, the end of the run).
  struct Launched {
    StepMetrics m;
    HostCopy flat;  // [3T + 2], on its way: loss, acc and count sums, neutralised, |g|
    int64_t step = 0, cursor = 0;  // 1-based step; the data cursor after it
    double lr = 0, sync_s = 0;
  };
  std::optional<Launched> launched;
  double last_read = t_start;  // a step's time runs from the read-back before it to its own
  auto read_back = [&](const Launched& l) {
    watch::phase("metrics read-back", l.step);
    NvtxRange range("metrics read-back");
    auto flat = l.flat.get();  // the step's one wait for the device (for this step's work only)
    const auto& m = l.m;
    const double lr = l.lr, sync_s = l.sync_s;
    const double grad_norm = flat[3 * T + 1].item<double>();
    if (!std::isfinite(grad_norm)) {  // name the step's samples before account() may stop the run
      std::string keys;
      for (const auto& k : m.keys) keys += (keys.empty() ? "" : ", ") + k;
      auto all = env.gather_text(fmt::format("replica {}: {}", coord.dp, keys));
      std::string text;
      for (size_t r = 0; r < all.size(); ++r)
        if (r == 0 || all[r] != all[r - 1]) text += (text.empty() ? "" : "; ") + all[r];
      if (rank0)
        spdlog::warn("optimizer step {} skipped: gradient norm {} (its samples: {})", l.step,
                     grad_norm, text);
    }
    auto stats = optimizer.account(grad_norm, lr);
    auto host = flat.narrow(0, 0, 3 * T).view({3, T});
    skipped_steps += stats.skipped ? 1 : 0;
    tally.samples += D * accum;
    tally.skipped_steps += stats.skipped ? 1 : 0;
    tally.bad += stats.skipped ? D * accum : std::llround(flat[3 * T].item<double>());
    const double read = now_s(), step_s = read - last_read;
    last_read = read;
    if (rank0) {
      std::vector<double> loss_k, acc_k;
      double loss = 0, tau = 0, prod = 1;
      for (int64_t k = 0; k < T; ++k) {
        const double cnt = std::max(host[2][k].item<double>(), 1.0);
        loss_k.push_back(host[0][k].item<double>() / cnt);
        acc_k.push_back(host[1][k].item<double>() / cnt);
        loss += step_w[k] * loss_k.back() / weight_sum;
        prod *= acc_k.back();
        tau += prod;
      }
      const double tokens_per_s = static_cast<double>(m.tokens * D) / step_s;
      const double elapsed = now_s() - t_start;
      const double eta = elapsed / static_cast<double>(l.step - start_step) *
                         static_cast<double>(total_steps - l.step);
      nlohmann::json line = {{"step", l.step},
                             {"loss", loss},
                             {"loss_ttt", loss_k},
                             {"acc_ttt", acc_k},
                             {"accept_len", tau},
                             {"lr", lr},
                             {"grad_norm", stats.grad_norm},
                             {"skipped", stats.skipped},
                             {"tokens_per_s", tokens_per_s},
                             {"mem_gib", peak_memory_gib(device)},
                             {"data_s", m.data_s},
                             {"sync_s", sync_s},
                             {"compute_s", std::max(step_s - m.data_s - sync_s, 0.0)},
                             {"step_s", step_s},
                             {"cursor", l.cursor},
                             {"neutralised", m.neutralised}};
      metrics->write(line);
      if (l.step % cfg.training.log_interval == 0 || l.step == total_steps) {
        std::string accs;
        for (double a : acc_k) accs += fmt::format("{}{:.2f}", accs.empty() ? "" : " ", a);
        spdlog::info(
            "step {}/{} loss {:.4f} acc [{}] accept {:.2f} lr {:.2e} |g| {:.3f} {:.0f} tok/s "
            "step {:.2f}s (data {:.2f} compute {:.2f} sync+opt {:.2f}) ETA {:.0f}s",
            l.step, total_steps, loss, accs, tau, lr, stats.grad_norm, tokens_per_s, step_s, m.data_s,
            std::max(step_s - m.data_s - sync_s, 0.0), sync_s, eta);
      }
    }
  };
  auto drain = [&] {
    if (launched) read_back(*launched);
    launched.reset();
  };
  while (step < total_steps) {
    StepMetrics m;
    bool ended = false;
    for (int64_t micro = 0; micro < accum; ++micro) {
      watch::phase("reading data", step + 1, micro, data_wait_s);
      const double td = now_s();
      std::optional<data::ShardSample> sample;
      {
        NvtxRange range("data");
        sample = prefetcher.next();
      }
      m.data_s += now_s() - td;
      if (!sample) {
        ended = true;
        break;
      }
      m.neutralised += sample->neutralised ? 1 : 0;
      m.tokens += sample->geometry.length;
      m.keys.push_back(sample->key);
      watch::phase("forward/backward", step + 1, micro);
      auto obj = train_step.micro_batch(weights, target, std::move(sample->input));
      m.loss_k =
          m.loss_k.defined() ? m.loss_k + obj.loss_k * obj.count_k : obj.loss_k * obj.count_k;
      m.acc_k = m.acc_k.defined() ? m.acc_k + obj.acc_k * obj.count_k : obj.acc_k * obj.count_k;
      m.count_k = m.count_k.defined() ? m.count_k + obj.count_k : obj.count_k;
    }
    if (ended) {
      spdlog::warn("the data stream ended before step {}: stopping", step + 1);
      break;
    }
    cursor += D * accum;
    // Gradient sync and the optimizer step, timed on the host. Neither waits for the device: on
    // GPU this is their launch, and the device's work is waited for at the metrics' read-back
    // below (counted in compute_s).
    const double ts = now_s();
    watch::phase("gradient sync and optimizer step", step + 1);
    train_step.sync_gradients(optimizer);
    if (!opt.dump_grads.empty()) dump_gradients(opt.dump_grads, step + 1, weights, rank0);
    const double lr = learning_rate(cfg.training, step, total_steps);
    auto norm = optimizer.launch_step(lr);
    const double sync_s = now_s() - ts;

    // Metrics, token-weighted over micro-batches and replicas, the neutralised samples of every
    // replica, and the gradient norm (the same on every rank): the step's one read-back, of the
    // step before this one (drain), now that this one is queued.
    auto packed = at::cat(
        {at::stack({m.loss_k, m.acc_k, m.count_k}).to(at::kFloat).view({-1}),
         at::full({1}, static_cast<double>(m.neutralised), m.loss_k.options().dtype(at::kFloat))});
    groups.group(GroupKind::dp).all_reduce(packed, ReduceOp::sum);
    HostCopy flat(at::cat({packed, norm.to(at::kFloat).view({1})}));
    drain();
    launched = Launched{std::move(m), flat, step + 1, cursor, lr, sync_s};
    ++step;
    if (static_cast<double>(tally.bad) > max_bad) {  // the run can no longer stay under the bound
      too_bad = true;
      break;
    }
    watch::phase("pre-emption check", step);
    const bool signalled = preempted_anywhere(groups);
    const bool stop_here = cfg.training.stop_after > 0 && step >= cfg.training.stop_after;
    if (signalled || stop_here) {
      drain();
      if (signalled)
        spdlog::warn("pre-emption signal received: saving at step {} and exiting", step);
      save(step);
      preempted = true;
      break;
    }
    if (cfg.checkpoint.interval > 0 && step % cfg.checkpoint.interval == 0 && step < total_steps) {
      drain();  // the checkpoint's step is in metrics.jsonl before the checkpoint exists
      save(step);
    }
    if (cfg.training.eval_interval > 0 && step % cfg.training.eval_interval == 0 &&
        step < total_steps) {
      drain();
      run_eval(step);
    }
  }
  drain();  // the last step, however the loop ended
  watch::phase("end of run", step);
  const std::string summary = tally_text(tally, reader, env, layout.sp());
  const bool nothing = total_steps > start_step && tally.samples == tally.bad;
  too_bad = too_bad || tally.bad_fraction() > cfg.data.max_bad_fraction;
  if (nothing || too_bad) {
    if (rank0)
      spdlog::error(
          "this run {}: {} (data.max_bad_fraction {}); no final checkpoint written. See the "
          "warnings above for each sample; fix the data (or raise data.max_bad_fraction)",
          nothing ? "trained on nothing" : "had too many bad samples", summary,
          cfg.data.max_bad_fraction);
    return 1;
  }
  if (!preempted && step > start_step) run_eval(step);
  if (!preempted && step > start_step) save(step);
  if (rank0)
    spdlog::info(
        "done: step {}; this run: {}; checkpoints in {}/checkpoints (eaglet export --checkpoint "
        "<output_dir> --out <dir> exports the latest)",
        step, summary, cfg.output_dir);
  return 0;
}

}  // namespace eaglet::train
