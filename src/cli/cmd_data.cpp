// `eaglet data`: the data tools. `synth` writes learnable synthetic samples (and the hidden
// teacher's target folder), `put` shards one full sample into the store, `check` reads every sample
// under mpirun exactly as training does (each rank its own shards, through the prefetcher and the
// SP-wide decision) and optionally compares against full samples, `ingest` writes manifest lines
// for TorchSpec/SGLang metadata records (data/torchspec_records.h).
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <climits>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/session.h"
#include "core/error.h"
#include "core/tensor_text.h"
#include "data/manifest.h"
#include "data/prefetcher.h"
#include "data/sampler.h"
#include "data/shard_reader.h"
#include "data/synth.h"
#include "data/torchspec_records.h"
#include "io/files.h"

namespace eaglet::cli {
namespace {

int64_t int_option(const ParsedArgs& args, const std::string& name, int64_t fallback) {
  if (!args.has(name)) return fallback;
  const std::string text = args.get(name);
  try {
    size_t used = 0;
    const int64_t v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  EAGLET_FAIL("eaglet data: {} {}: expected an integer", name, text);
}

// Loads and validates the config for a single-process producer (world = P: the layout it shards
// for).
Config producer_config(const ParsedArgs& args, const char* action) {
  EAGLET_CHECK(args.has("--config"), "eaglet data {}: --config FILE is required", action);
  Config cfg = load_config(args.get("--config"), args.all("--set"));
  check_valid(cfg, cfg.parallel.ulysses * cfg.parallel.ring);
  return cfg;
}

// Runs `fn`, turning LibTorch and other exceptions into eaglet::Error naming the action.
template <typename Fn>
void guarded(const char* action, Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    EAGLET_FAIL("eaglet data {} failed: {}", action, e.what());
  }
}

int run_synth(const ParsedArgs& args) {
  const Config cfg = producer_config(args, "synth");
  data::SynthOptions opt;
  opt.samples = int_option(args, "--samples", 16);
  opt.seed = int_option(args, "--seed", cfg.training.seed);
  opt.min_len = int_option(args, "--min-len", 0);
  opt.max_len = int_option(args, "--max-len", 0);
  opt.target_dir = args.get("--target");
  opt.full_dir = args.get("--save-full");
  opt.num_aux = int_option(args, "--num-aux", 0);
  opt.sharded = !args.has("--unsharded");
  opt.documents = int_option(args, "--documents", 1);
  data::SynthSummary sum;
  guarded("synth", [&] { sum = data::synthesize(cfg, opt); });
  std::cout << fmt::format(
      "eaglet data synth: {} samples ({} tokens, {} loss tokens; {} longer than "
      "data.max_seq_length={}, {} with tail padding) {} P={} T={} into the {} store at "
      "{}\n  manifest: {}\n  target:   {} (set model.target to it)\n",
      sum.samples, sum.tokens, sum.loss_tokens, sum.longer_than_max, cfg.data.max_seq_length,
      sum.not_divisible, opt.sharded ? "sharded for" : "unsharded (usp_sharded: false), readable by",
      cfg.parallel.ulysses * cfg.parallel.ring, cfg.training.ttt_length,
      cfg.data.store, cfg.data.path, sum.manifest, sum.target_dir);
  return 0;
}

int run_put(const ParsedArgs& args) {
  const Config cfg = producer_config(args, "put");
  EAGLET_CHECK(args.has("--key") && args.has("--input"),
               "eaglet data put: --key K and --input sample.safetensors are required");
  const std::string key = args.get("--key"), input = args.get("--input");
  data::ManifestEntry e;
  guarded("put", [&] {
    const auto sample = data::read_full_sample(input);
    auto store = data::open_store(cfg.data);
    data::ManifestWriter manifest(data::manifest_path(cfg.data));
    e = data::put_sample(*store, manifest, key, sample, data::manifest_expect(cfg),
                         !args.has("--unsharded"));
  });
  std::cout << fmt::format(
      "eaglet data put: {} ({} tokens, Ht={}) as {} shards into the {} store at {}; manifest {}\n",
      key, e.seq_len, e.hidden_size, e.sp_size, cfg.data.store, cfg.data.path,
      data::manifest_path(cfg.data));
  return 0;
}

// TorchSpec/SGLang metadata records (JSONL, or - for stdin, read as they come) -> manifest lines
// appended to --out (or the --config run's manifest). Keys already in it are skipped, so a rerun
// or a restarted stream adds only what is new. The layout: --sp-size/--ttt-length/
// --max-seq-length, else TORCHSPEC_USP_*.
int run_ingest(const ParsedArgs& args) {
  EAGLET_CHECK(args.has("--records"),
               "eaglet data ingest: --records FILE (TorchSpec metadata records, JSONL; - for "
               "stdin) is required");
  std::string out = args.get("--out");
  if (out.empty() && args.has("--config"))
    out = data::manifest_path(load_config(args.get("--config"), args.all("--set")).data);
  EAGLET_CHECK(!out.empty(),
               "eaglet data ingest: --out MANIFEST (or --config RUN.yaml naming data.manifest) is "
               "required");
  data::UspLayout layout = data::usp_layout_from_env();
  for (auto [flag, value] : {std::pair{"--sp-size", &layout.sp_size},
                             {"--ttt-length", &layout.ttt_length},
                             {"--max-seq-length", &layout.max_seq_length}})
    if (args.has(flag)) {
      *value = int_option(args, flag, 0);
      EAGLET_CHECK(*value > 0, "eaglet data ingest: {} {}: expected a positive integer", flag,
                   args.get(flag));
      layout.origin = "the command line and TORCHSPEC_USP_*";
    }
  if (args.has("--sharded")) layout.sharded_default = true;
  std::vector<int64_t> aux_ids;
  if (args.has("--aux-layer-ids")) {
    std::stringstream list(args.get("--aux-layer-ids"));
    for (std::string item; std::getline(list, item, ',');) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(item, &used);
      } catch (const std::exception&) {
      }
      EAGLET_CHECK(id >= 0 && used == item.size(),
                   "eaglet data ingest: --aux-layer-ids {}: expected integers >= 0, comma-separated",
                   args.get("--aux-layer-ids"));
      aux_ids.push_back(id);
    }
  }

  std::set<std::string> have;  // keys already in the output manifest
  if (io::path_exists(out)) {
    std::ifstream in(out);
    int64_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      EAGLET_CHECK(j.is_object() && j.contains("key") && j["key"].is_string(),
                   "eaglet data ingest: manifest {}:{} has no \"key\" (not a manifest?); "
                   "choose another --out",
                   out, n);
      have.insert(j["key"].get<std::string>());
    }
  }
  const std::string path = args.get("--records");
  std::ifstream file;
  if (path != "-") {
    file.open(path);
    EAGLET_CHECK(file.good(), "eaglet data ingest: --records {}: cannot open", path);
  }
  std::istream& in = path == "-" ? std::cin : file;
  std::unique_ptr<data::ManifestWriter> manifest;  // opened with the first new line
  int64_t line = 0, added = 0, sharded = 0, already = 0;
  std::set<int64_t> num_aux, hidden;
  for (std::string text; std::getline(in, text);) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto e = data::entry_from_torchspec_record(text, layout, aux_ids, path, line);
    if (!have.insert(e.key).second) {
      ++already;
      continue;
    }
    // The line must read back as the same sample (the manifest's own validation).
    data::parse_manifest_line(data::manifest_line(e),
                              {e.sp_size, e.ttt_length, e.max_seq_length, 0, 0}, out, 0);
    if (!manifest) manifest = std::make_unique<data::ManifestWriter>(out);
    manifest->append(e);
    ++added;
    sharded += e.usp_sharded;
    num_aux.insert(e.num_aux);
    hidden.insert(e.hidden_size);
  }
  EAGLET_CHECK(!in.bad(), "eaglet data ingest: --records {}: read error", path);
  std::cout << fmt::format(
      "eaglet data ingest: {} records -> {} new manifest lines in {} ({} pre-sharded for P={} "
      "T={} max_seq_length={}, {} unsharded; {} already there); num_aux {}, hidden_size {}\n",
      added + already, added, out, sharded, layout.sp_size, layout.ttt_length,
      layout.max_seq_length, added - sharded, already,
      num_aux.empty() ? "-" : fmt::format("{}", fmt::join(num_aux, "/")),
      hidden.empty() ? "-" : fmt::format("{}", fmt::join(hidden, "/")));
  return 0;
}

// Bitwise comparison of one rebuilt shard with the full sample cut by the plain reference.
int64_t compare_with_reference(const data::ShardSample& got, const std::string& reference_dir,
                               const data::ReaderOptions& opt) {
  const auto full = data::read_full_sample(io::join_path(reference_dir, got.key + ".safetensors"));
  data::FullSample stored{full.hs.to(at::kBFloat16), full.ids.to(at::kLong),
                          full.lhs.to(at::kBFloat16), full.loss_mask};
  const auto& g = got.geometry;
  const int64_t s = opt.sp_rank;
  EAGLET_CHECK(full.ids.size(0) == g.seq_len,
               "data check: reference {}/{}.safetensors has {} tokens, the manifest says {}",
               reference_dir, got.key, full.ids.size(0), g.seq_len);
  auto want = data::reference_shard(stored, g, s);
  // Masks and positions, one row at a time from the full sample.
  auto mask = at::zeros({g.local_len}, at::kFloat);
  auto attention = at::zeros({g.local_len}, at::kLong);
  auto full_mask = full.loss_mask.to(at::kLong).contiguous();
  for (int64_t i = 0; i < g.local_len; ++i) {
    const int64_t row = s * g.chunk + i;
    if (row >= g.length) break;
    attention[i] = 1;
    mask[i] = full_mask[row].item<int64_t>() != 0 ? 1.0 : 0.0;
  }
  auto positions = at::zeros({g.chunk * opt.ulysses}, at::kLong);
  for (int64_t i = 0; i < g.chunk * opt.ulysses; ++i)
    positions[i] = opt.ring_rank * g.chunk * opt.ulysses + i;
  if (!got.documents.empty()) {
    // A packed sample (DESIGN §6), row by row: each own row, and after the last own row of a
    // document (or of the shard) T halo rows, a zero row where the document has ended.
    std::vector<int64_t> start_of(g.length), end_of(g.length);
    for (int64_t begin = 0, d = 0; begin < g.length; ++d) {
      const int64_t end = std::min(begin + got.documents.at(static_cast<size_t>(d)), g.length);
      for (int64_t r = begin; r < end; ++r) start_of[r] = begin, end_of[r] = end;
      begin = end;
    }
    std::vector<int64_t> rows;  // -1: a zero row
    for (int64_t r = s * g.chunk; r < (s + 1) * g.chunk; ++r) {
      rows.push_back(r < g.length ? r : -1);
      const int64_t end = r < g.length ? end_of[r] : g.length;
      // (The last document's end, L, is no cut: only zero padding follows it.)
      const bool doc_ends = r + 1 == end && end < g.length;
      if (!doc_ends && r + 1 != (s + 1) * g.chunk) continue;
      for (int64_t j = 1; j <= g.ttt_length; ++j) rows.push_back(r + j < end ? r + j : -1);
    }
    auto pick = [&](const at::Tensor& x, int64_t n) {
      auto out = at::zeros({static_cast<int64_t>(rows.size()), n}, x.options());
      for (size_t i = 0; i < rows.size(); ++i)
        if (rows[i] >= 0) out[static_cast<int64_t>(i)].copy_(x[rows[i]].reshape({n}));
      return out;
    };
    want.hs = pick(stored.hs, stored.hs.size(1));
    want.lhs = pick(stored.lhs, stored.lhs.size(1));
    want.ids = pick(stored.ids, 1).reshape({-1});
    mask = pick(full_mask.ne(0).to(at::kFloat), 1).reshape({-1});
    for (int64_t i = 0; i < g.chunk * opt.ulysses; ++i) {
      const int64_t last = g.length - 1;
      positions[i] = i - (i < g.length ? start_of[i] : start_of[last]);
    }
  }

  int64_t bad = 0;
  auto check = [&](const char* name, const at::Tensor& a, const at::Tensor& b) {
    const auto ac = a.cpu();
    if (ac.sizes() == b.sizes() && ac.scalar_type() == b.scalar_type() && at::equal(ac, b)) return;
    ++bad;
    spdlog::error(
        "data check: sample {} SP rank {}: {} differs from the reference: got {}, want {}", got.key,
        s, name, tensor_text(ac), tensor_text(b));
  };
  check("hs", got.input.hs, want.hs);
  check("ids", got.input.ids, want.ids);
  check("lhs", got.input.lhs, want.lhs);
  check("loss_mask", got.input.loss_mask, mask);
  check("attention_mask", got.attention_mask, attention);
  check("positions", got.input.positions, positions);
  return bad;
}

int run_check(const ParsedArgs& args) {
  return run_distributed(args, "data check", [&](Session& s) {
    const Config& cfg = s.config;
    const auto& groups = *s.groups;
    const Layout& layout = groups.layout();
    const RankCoord& coord = groups.coord();
    const auto timeout =
        std::chrono::seconds(int_option(args, "--timeout", cfg.data.manifest_wait_s));
    const int64_t want = int_option(args, "--samples", 0);
    const int64_t depth = int_option(args, "--prefetch", cfg.data.prefetch);
    const std::string reference = args.get("--reference");

    int64_t counts[5] = {0, 0, 0, 0, 0};  // read, skipped, empty, mismatches, disagreements
    // Every rank reports whether it failed, within the timeout (MpiEnv::agree): a rank stuck in
    // a collective is not waited for, never a hang.
    s.env.agree(
        [&] {
          auto store = data::open_store(cfg.data);
          data::ManifestReader manifest(data::manifest_path(cfg.data), data::manifest_expect(cfg));
          // Every rank must read the same stream: agree on its length (the smallest count seen).
          int64_t n = want;
          if (n == 0) {
            manifest.poll();
            manifest.require_exists();
            auto t = at::full({1}, -manifest.size(), at::kLong).to(groups.device());
            groups.group(GroupKind::world).all_reduce(t, ReduceOp::max);
            n = -t.cpu().item<int64_t>();
            EAGLET_CHECK(n > 0, "manifest {}: no samples", manifest.path());
          }
          data::Sampler sampler(n, 1, cfg.training.seed, /*shuffle=*/false);
          auto opt = data::reader_options(cfg, layout, coord, groups.device(), at::kBFloat16);
          data::ShardReader reader(*store, groups.host_group(GroupKind::sp), opt);
          {
            data::Prefetcher prefetcher(
                reader,
                data::replica_source(
                    manifest, sampler, coord.dp, layout.dp(), 0,
                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout)),
                depth);
            while (auto sample = prefetcher.next()) {
              ++counts[0];
              spdlog::debug("data check: position {} sample {}: {} loss tokens{}", sample->position,
                            sample->key, sample->global_loss_tokens,
                            sample->neutralised ? " (neutralised)" : "");
              if (!reference.empty() && !sample->neutralised)
                counts[3] += compare_with_reference(*sample, reference, opt);
            }
            spdlog::info("data check: prefetcher waited {} times for storage ({:.3f} s in all)",
                         prefetcher.stalls(), prefetcher.stall_seconds());
          }
          counts[1] = reader.skipped_errors();
          counts[2] = reader.empty_samples();
          // Every SP rank must have taken the same decisions.
          auto both = at::tensor(std::vector<int64_t>{counts[1], -counts[1], counts[2], -counts[2]})
                          .to(groups.device());
          groups.group(GroupKind::sp).all_reduce(both, ReduceOp::max);
          auto b = both.cpu();
          counts[4] = (b[0].item<int64_t>() != -b[1].item<int64_t>()) +
                      (b[2].item<int64_t>() != -b[3].item<int64_t>());
        },
        timeout + std::chrono::seconds(30));

    spdlog::info(
        "data check rank {} (dp {}, sp {}): {} samples read, {} neutralised for errors, "
        "{} without loss tokens, {} mismatches",
        groups.world_rank(), coord.dp, coord.sp, counts[0], counts[1], counts[2], counts[3]);
    auto total = at::tensor(std::vector<int64_t>(counts, counts + 5)).to(groups.device());
    groups.group(GroupKind::world).all_reduce(total, ReduceOp::sum);
    auto t = total.cpu();
    const int64_t P = layout.sp();
    const int64_t read = t[0].item<int64_t>() / P, skipped = t[1].item<int64_t>() / P,
                  empty = t[2].item<int64_t>() / P, mismatches = t[3].item<int64_t>(),
                  disagree = t[4].item<int64_t>();
    const bool pass = mismatches == 0 && disagree == 0;
    spdlog::info(
        "data check: {} samples read by {} replicas x {} SP ranks; neutralised: {} for errors "
        "(data.on_error={}), {} without loss tokens; SP ranks agree: {}; {} mismatches{}: {}",
        read, layout.dp(), P, skipped, cfg.data.on_error, empty, disagree == 0 ? "yes" : "NO",
        mismatches, reference.empty() ? "" : " against " + reference, pass ? "PASS" : "FAIL");
    return pass ? 0 : 1;
  });
}

}  // namespace

Command data_command() {
  auto options = session_options();
  std::vector<OptionSpec> more = {
      {"synth", "", "action: write --samples synthetic samples and the teacher's target folder"},
      {"put", "", "action: shard the full sample --input into the store under --key"},
      {"check", "", "action (under mpirun): read every sample as training does"},
      {"ingest", "",
       "action: TorchSpec/SGLang metadata records --records into manifest lines (--out)"},
      {"--records", "FILE", "ingest: JSONL of TorchSpec's per-sample records; - reads stdin"},
      {"--out", "FILE", "ingest: the manifest to append to (else --config's data.manifest)"},
      {"--sp-size", "P", "ingest: P of usp_sharded records (TORCHSPEC_USP_SP_SIZE)"},
      {"--ttt-length", "T", "ingest: T of usp_sharded records (TORCHSPEC_USP_TTT_LENGTH)"},
      {"--max-seq-length", "L",
       "ingest: the producer's cut (TORCHSPEC_USP_MAX_SEQ_LENGTH)"},
      {"--sharded", "",
       "ingest: records without usp_sharded are pre-sharded (TORCHSPEC_USP_SHARDED_MOONCAKE=1)"},
      {"--aux-layer-ids", "A,B,C", "ingest: the target layers hs holds, for the export"},
      {"--samples", "N", "synth: samples to write (16); check: wait for N manifest lines"},
      {"--seed", "N", "synth: seed of the teacher and the samples (training.seed)"},
      {"--min-len", "N", "synth: shortest sample (max(T+2, max_seq_length/4))"},
      {"--max-len", "N", "synth: longest sample (1.25 x data.max_seq_length)"},
      {"--target", "DIR", "synth: the teacher's HF target folder (<data.path>/target)"},
      {"--save-full", "DIR", "synth: also write each full sample as DIR/<key>.safetensors"},
      {"--num-aux", "N",
       "synth: aux layers per sample (model.config.num_aux_hidden_states; train with the same)"},
      {"--documents", "N",
       "synth: pack N documents into each sample (manifest segments; train with parallel.ring "
       "= 1)"},
      {"--unsharded", "",
       "synth, put: write full-length {key}_hs|_ids|_lhs (usp_sharded: false), not P shards"},
      {"--key", "K", "put: the sample's key (any bytes but NUL, e.g. ultrachat.v2/conv:7_1a2b)"},
      {"--input", "FILE",
       "put: safetensors with hidden_states, input_ids, last_hidden_states, "
       "loss_mask"},
      {"--reference", "DIR", "check: compare every shard with DIR/<key>.safetensors"},
      {"--timeout", "SEC", "check: how long to wait for a manifest line (data.manifest_wait_s)"},
      {"--prefetch", "N", "check: samples read ahead per rank (data.prefetch)"},
  };
  options.insert(options.end(), more.begin(), more.end());
  return {"data",
          "data tools: `data synth` writes synthetic samples learnable from their hidden states "
          "(and the teacher's target folder), `data put` shards one full sample into the store, "
          "`data check` reads every sample as training does, `data ingest` writes the manifest "
          "for TorchSpec/SGLang output (see docs/DATA.md)",
          options, [](const ParsedArgs& args) {
            const int actions =
                args.has("synth") + args.has("put") + args.has("check") + args.has("ingest");
            EAGLET_CHECK(actions == 1,
                         "eaglet data: give exactly one action: synth, put, check or ingest (see "
                         "eaglet data --help)");
            if (args.has("synth")) return run_synth(args);
            if (args.has("put")) return run_put(args);
            if (args.has("ingest")) return run_ingest(args);
            return run_check(args);
          }};
}

}  // namespace eaglet::cli
