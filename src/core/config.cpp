// Field table, YAML parsing with unknown-key and type checks, --set overrides, validation rules
// and the YAML dump of the effective config.
#include "core/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

namespace eaglet {
namespace {

template <typename T>
const char* type_name();
template <>
const char* type_name<int64_t>() {
  return "int";
}
template <>
const char* type_name<double>() {
  return "float";
}
template <>
const char* type_name<bool>() {
  return "bool";
}
template <>
const char* type_name<std::string>() {
  return "string";
}
template <>
const char* type_name<std::vector<double>>() {
  return "list[float]";
}

std::string node_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

// A scalar written in quotes ("10", '1e-4') or tagged !!str. yaml-cpp tags a quoted scalar "!"
// and a plain one "?", and would convert either to a number or bool, so a number quoted by
// mistake would pass unnoticed.
bool quoted(const YAML::Node& n) {
  return n.IsScalar() && (n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str");
}

// The value as written, quotes kept, for messages about quoted values.
std::string written(const YAML::Node& n) {
  if (quoted(n)) return fmt::format("\"{}\"", n.Scalar());
  if (!n.IsSequence()) return node_text(n);
  std::vector<std::string> items;
  for (const auto& item : n) items.push_back(written(item));
  return fmt::format("[{}]", fmt::join(items, ", "));
}

bool any_quoted(const YAML::Node& n) {
  if (quoted(n)) return true;
  if (n.IsSequence())
    for (const auto& item : n)
      if (quoted(item)) return true;
  return false;
}

template <typename T>
Field field(std::string key, T& ref, std::string doc) {
  Field f;
  f.key = key;
  f.type = type_name<T>();
  f.doc = std::move(doc);
  f.set = [&ref, key](const YAML::Node& n) {
    if (!std::is_same_v<T, std::string> && any_quoted(n))
      throw std::invalid_argument(
          fmt::format("config error: {}={}: expected {}, got a quoted string", key, written(n),
                      type_name<T>()));
    bool ok = std::is_same_v<T, std::vector<double>> ? n.IsSequence() : n.IsScalar();
    if (ok) {
      try {
        ref = n.as<T>();
        return;
      } catch (const YAML::Exception&) {
      }
    }
    throw std::invalid_argument(
        fmt::format("config error: {}={}: expected {}", key, node_text(n), type_name<T>()));
  };
  // Doubles print in their shortest form that reads back to the same value ("0.05", not
  // "0.050000000000000003"), so the dump is both exact and readable.
  f.get = [&ref]() {
    if constexpr (std::is_same_v<T, double>) {
      return YAML::Node(fmt::format("{}", ref));
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      YAML::Node seq(YAML::NodeType::Sequence);
      for (double v : ref) seq.push_back(fmt::format("{}", v));
      return seq;
    } else {
      return YAML::Node(ref);
    }
  };
  return f;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string unknown_key_message(const std::string& key, const std::string& origin,
                                const std::vector<Field>& table) {
  std::string best;
  size_t best_d = 4;  // suggest only close matches
  for (const auto& f : table) {
    size_t d = edit_distance(key, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  std::string hint = best.empty() ? "" : fmt::format(" (did you mean {}?)", best);
  return fmt::format("config error: {}: unknown key in {}{}", key, origin, hint);
}

const char* kDraftConfigKey = "model.config";

// Fills the draft architecture from an HF config.json; keys eaglet does not use are ignored
// (HF configs carry many), keys it uses must have the right type.
// `named` is the key that named the file (for messages): model.config, or model.init_from.
void load_draft_config_json(Config& cfg, const std::string& path, std::vector<std::string>& errors,
                            const std::string& named = kDraftConfigKey) {
  std::ifstream in(path);
  if (!in) {
    errors.push_back(
        fmt::format("config error: {}={}: file not found or unreadable", named, path));
    return;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    errors.push_back(
        fmt::format("config error: {}={}: not valid JSON: {}", named, path, e.what()));
    return;
  }
  cfg.model.config_file = path;
  // Not a field of the table (it is a list and only travels to the export): read it here.
  std::vector<const nlohmann::json*> holders;  // eagle_config first, as SGLang reads it
  if (j.contains("eagle_config") && j["eagle_config"].is_object()) holders.push_back(&j["eagle_config"]);
  holders.push_back(&j);
  for (const nlohmann::json* holder : holders) {
    if (!holder->contains("eagle_aux_hidden_state_layer_ids")) continue;
    const auto& ids = (*holder)["eagle_aux_hidden_state_layer_ids"];
    if (ids.is_null()) continue;
    bool ok = ids.is_array() && !ids.empty();
    for (const auto& x : ids) ok = ok && x.is_number_integer() && x.get<int64_t>() >= 0;
    if (!ok) {
      errors.push_back(fmt::format(
          "config error: {}={}: eagle_aux_hidden_state_layer_ids must be a list of non-negative "
          "integers, got {}",
          named, path, ids.dump()));
      return;
    }
    cfg.model.config.aux_layer_ids = ids.get<std::vector<int64_t>>();
    break;
  }
  const std::string prefix = std::string(kDraftConfigKey) + ".";
  // HF nests rope settings: {"rope_scaling": {"rope_type": "llama3", "factor": 8, ...}}.
  nlohmann::json flat = j;
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const auto& rs = j["rope_scaling"];
    auto type =
        rs.contains("rope_type") ? rs["rope_type"] : rs.value("type", nlohmann::json("none"));
    flat["rope_type"] = type == "default" ? nlohmann::json("none") : type;
    for (auto [from, to] :
         {std::pair{"factor", "rope_factor"},
          {"low_freq_factor", "rope_low_freq_factor"},
          {"high_freq_factor", "rope_high_freq_factor"},
          {"original_max_position_embeddings", "rope_original_max_position_embeddings"}})
      if (rs.contains(from)) flat[to] = rs[from];
  }
  // HF's defaults for keys a config.json may leave out (`eaglet export` writes target_hidden_size
  // only when it differs from hidden_size): head_dim = hidden_size / num_attention_heads,
  // target_hidden_size = hidden_size; not this struct's defaults, which suit inline configs.
  // (Only from integers: a wrong value is reported once, under its own key.)
  auto absent = [&](const char* key) { return !flat.contains(key) || flat[key].is_null(); };
  auto integer = [&](const char* key) { return !absent(key) && flat[key].is_number_integer(); };
  if (absent("target_hidden_size") && integer("hidden_size"))
    flat["target_hidden_size"] = flat["hidden_size"];
  if (absent("head_dim") && integer("hidden_size") && integer("num_attention_heads") &&
      flat["num_attention_heads"].get<int64_t>() > 0)
    flat["head_dim"] =
        flat["hidden_size"].get<int64_t>() / flat["num_attention_heads"].get<int64_t>();
  for (auto& f : fields(cfg)) {
    if (f.key.rfind(prefix, 0) != 0) continue;
    auto name = f.key.substr(prefix.size());
    if (!flat.contains(name) || flat[name].is_null()) continue;
    try {
      f.set(YAML::Load(flat[name].dump()));
    } catch (const std::invalid_argument& e) {
      errors.push_back(fmt::format("{} (from {})", e.what(), path));
    }
  }
}

// " (lines 3 and 7)", " (lines 3, 7 and 9)"; empty when yaml-cpp gave no marks (line 0).
std::string lines_text(const std::vector<int>& lines) {
  if (std::find(lines.begin(), lines.end(), 0) != lines.end()) return "";
  std::string out = " (lines ";
  for (size_t i = 0; i < lines.size(); ++i)
    out += fmt::format("{}{}", i == 0 ? "" : i + 1 == lines.size() ? " and " : ", ", lines[i]);
  return out + ")";
}

// yaml-cpp keeps every entry of a mapping, a repeated key included, and the last one would
// silently win: each key given twice in one mapping, at any depth, is an error naming its dotted
// path and the lines.
void find_duplicate_keys(const YAML::Node& map, const std::string& prefix,
                         const std::string& origin, std::vector<std::string>& errors) {
  std::vector<std::pair<std::string, std::vector<int>>> keys;  // name -> 1-based lines, in order
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string name = it->first.Scalar();
    auto entry =
        std::find_if(keys.begin(), keys.end(), [&](const auto& k) { return k.first == name; });
    if (entry == keys.end()) entry = keys.insert(keys.end(), {name, {}});
    entry->second.push_back(it->first.Mark().line + 1);  // Mark().line is 0-based, -1 unknown
  }
  for (const auto& [name, lines] : keys)
    if (lines.size() > 1)
      errors.push_back(fmt::format("config error: {}{}: duplicate key in {}{}", prefix, name,
                                   origin, lines_text(lines)));
  for (auto it = map.begin(); it != map.end(); ++it)
    if (it->second.IsMap())
      find_duplicate_keys(it->second, prefix + it->first.Scalar() + ".", origin, errors);
}

// Flattens a YAML map into dotted leaf keys (scalars and sequences are leaves).
void flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, YAML::Node>>& out) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string key =
        prefix.empty() ? it->first.as<std::string>() : prefix + "." + it->first.as<std::string>();
    if (it->second.IsMap())
      flatten(it->second, key, out);
    else
      out.emplace_back(key, it->second);
  }
}

bool is_draft_config_key(const std::string& key) {
  return key == kDraftConfigKey || key.rfind(std::string(kDraftConfigKey) + ".", 0) == 0;
}

void apply(Config& cfg, const std::string& key, const YAML::Node& value, const std::string& origin,
           std::vector<std::string>& errors) {
  if (key == kDraftConfigKey && value.IsScalar()) {
    load_draft_config_json(cfg, value.as<std::string>(), errors);
    return;
  }
  auto table = fields(cfg);
  auto it = std::find_if(table.begin(), table.end(), [&](const Field& f) { return f.key == key; });
  if (it == table.end()) {
    errors.push_back(unknown_key_message(key, origin, table));
    return;
  }
  if (value.IsNull()) return;  // "key:" with no value keeps the default
  try {
    it->set(value);
  } catch (const std::invalid_argument& e) {
    errors.push_back(e.what());
  }
}

void throw_if_any(const std::vector<std::string>& errors) {
  if (errors.empty()) return;
  std::string all;
  for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
  EAGLET_FAIL("{}", all);
}

Config parse_node(const YAML::Node& root, const std::string& origin,
                  const std::vector<std::string>& overrides) {
  Config cfg;
  std::vector<std::string> errors;
  bool draft_config_given = false;  // model.config as a path or any inline model.config.* key
  if (root && !root.IsNull()) {
    if (!root.IsMap())
      EAGLET_FAIL("config error: {}: the top level must be a mapping of keys", origin);
    find_duplicate_keys(root, "", origin, errors);
    std::vector<std::pair<std::string, YAML::Node>> leaves;
    flatten(root, "", leaves);
    for (auto& [key, value] : leaves) {
      draft_config_given = draft_config_given || is_draft_config_key(key);
      apply(cfg, key, value, origin, errors);
    }
  }
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors.push_back(fmt::format("config error: --set {}: expected key=value", o));
      continue;
    }
    std::string key = o.substr(0, eq), text = o.substr(eq + 1);
    YAML::Node value;
    try {
      value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
    } catch (const YAML::Exception& e) {
      errors.push_back(fmt::format("config error: --set {}: value is not YAML: {}", o, e.what()));
      continue;
    }
    draft_config_given = draft_config_given || is_draft_config_key(key);
    apply(cfg, key, value, "--set", errors);
  }
  // A draft to start from brings its architecture: model.init_from's config.json (an export or a
  // checkpoint folder has one) stands for model.config unless that is given. Without a
  // config.json nothing is implied (the weights' shapes are checked when they are loaded).
  if (!cfg.model.init_from.empty() && !draft_config_given) {
    const std::string implied = cfg.model.init_from + "/config.json";
    if (std::ifstream(implied))
      load_draft_config_json(cfg, implied, errors, "model.init_from (its config.json)");
  }
  throw_if_any(errors);
  return cfg;
}

template <typename T>
std::string one_of(const T& value, std::initializer_list<const char*> allowed) {
  for (auto a : allowed)
    if (value == a) return "";
  return fmt::format("must be one of {}", fmt::join(allowed, ", "));
}

}  // namespace

std::vector<Field> fields(Config& c) {
  auto& m = c.model.config;
  return {
      field("output_dir", c.output_dir,
            "folder for logs, metrics, checkpoints and the config dump"),
      field("parallel.ulysses", c.parallel.ulysses,
            "Ulysses degree U (heads scattered over U ranks)"),
      field("parallel.ring", c.parallel.ring, "ring degree R (KV blocks rotated over R ranks)"),
      field("parallel.ring_balance", c.parallel.ring_balance,
            "zigzag | zigzag_exchange | none: zigzag gives each ring rank one early and one late "
            "half-chunk, so every ring step does equal causal work (U even or 1: the rows move "
            "there once per sample; other U, or zigzag_exchange: the attention's rows move there "
            "and back at every TTT step)"),
      field("runtime.device", c.runtime.device,
            "auto | cpu | cuda (auto: cuda when a GPU is visible)"),
      field("runtime.threads", c.runtime.threads,
            "intra-op CPU threads per rank; 0 = LibTorch default"),
      field("runtime.log_level", c.runtime.log_level, "trace | debug | info | warn | error"),
      field("runtime.dtype", c.runtime.dtype,
            "compute dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float64"),
      field("runtime.collectives", c.runtime.collectives,
            "auto | nccl | host: how ranks exchange tensors. auto: NCCL on GPUs, MPI on CPUs; "
            "host: GPU tensors copied to host memory and moved by MPI, and ranks may share a "
            "GPU (slow: for checking a layout on fewer GPUs than ranks, or without NCCL)"),
      field("runtime.timeout_s", c.runtime.timeout_s,
            "progress watchdog: when a rank makes no progress (a collective, a step, a read) for "
            "this many seconds, every live rank logs where it waits and the job exits 1; 0 = off"),
      field("data.store", c.data.store, "dir (embedded, on disk) | mooncake"),
      field("data.path", c.data.path, "folder of the dir store"),
      field("data.manifest", c.data.manifest,
            "manifest JSONL (default: <data.path>/manifest.jsonl)"),
      field("data.max_seq_length", c.data.max_seq_length,
            "longest sequence L used; longer samples are cut"),
      field("data.on_error", c.data.on_error,
            "fail | skip (neutralise a bad sample on its SP group; a store outage — Mooncake master "
            "or transport down — is always fatal after ~4 s of retries)"),
      field("data.max_bad_fraction", c.data.max_bad_fraction,
            "the run fails (exit 1) when more than this fraction of its samples were skipped or "
            "neutralised (bad objects, non-finite values, no loss tokens)"),
      field("data.consume", c.data.consume, "remove objects from the store after reading them"),
      field("data.eval_manifest", c.data.eval_manifest,
            "manifest of held-out samples in the same store (evaluated, never trained on)"),
      field("data.follow", c.data.follow,
            "the manifest grows while training: read it as a stream (needs training.max_steps)"),
      field("data.manifest_wait_s", c.data.manifest_wait_s,
            "seconds to wait for a sample the producer has not written yet"),
      field("data.prefetch", c.data.prefetch, "samples each rank reads ahead of training"),
      field("data.vocab_samples", c.data.vocab_samples,
            "samples counted to build t2d/d2t when no mapping is given"),
      field("data.mooncake_master", c.data.mooncake_master, "Mooncake master address host:port"),
      field("data.mooncake_metadata", c.data.mooncake_metadata,
            "Mooncake metadata server URL (or P2PHANDSHAKE)"),
      field("data.mooncake_protocol", c.data.mooncake_protocol,
            "Mooncake transfer protocol: tcp | rdma"),
      field("data.mooncake_device", c.data.mooncake_device, "RDMA device names (rdma only)"),
      field("data.mooncake_local_hostname", c.data.mooncake_local_hostname,
            "address this client advertises"),
      field("data.mooncake_segment_size", c.data.mooncake_segment_size,
            "bytes of memory this process lends the store (0: pure client)"),
      field("data.mooncake_buffer_size", c.data.mooncake_buffer_size,
            "bytes of the local transfer buffer"),
      field("model.target", c.model.target, "HF folder of the target model (embeddings, lm_head)"),
      field("model.init_from", c.model.init_from,
            "Eagle3 draft (export or checkpoint folder) to start from; its config.json stands "
            "for model.config unless model.config is given"),
      field("model.config.hidden_size", m.hidden_size,
            "draft hidden size H (model.config may instead name a config.json)"),
      field("model.config.num_attention_heads", m.num_attention_heads, "query heads nH"),
      field("model.config.num_key_value_heads", m.num_key_value_heads, "KV heads nKV"),
      field("model.config.head_dim", m.head_dim, "head dimension d"),
      field("model.config.intermediate_size", m.intermediate_size, "MLP width"),
      field("model.config.vocab_size", m.vocab_size, "target vocabulary Vt"),
      field("model.config.draft_vocab_size", m.draft_vocab_size, "draft vocabulary Vd"),
      field("model.config.target_hidden_size", m.target_hidden_size, "target hidden size Ht"),
      field("model.config.num_aux_hidden_states", m.num_aux_hidden_states,
            "aux layers of the target the draft takes (fc is [H, this*Ht]; = the data's num_aux)"),
      field("model.config.rms_norm_eps", m.rms_norm_eps, "RMSNorm epsilon"),
      field("model.config.rope_theta", m.rope_theta, "RoPE base θ"),
      field("model.config.max_position_embeddings", m.max_position_embeddings, "largest position"),
      field("model.config.rope_type", m.rope_type,
            "RoPE scaling: none | linear | llama3 (HF rope_scaling.rope_type)"),
      field("model.config.rope_factor", m.rope_factor, "rope_scaling.factor (linear, llama3)"),
      field("model.config.rope_low_freq_factor", m.rope_low_freq_factor,
            "rope_scaling.low_freq_factor (llama3)"),
      field("model.config.rope_high_freq_factor", m.rope_high_freq_factor,
            "rope_scaling.high_freq_factor (llama3)"),
      field("model.config.rope_original_max_position_embeddings",
            m.rope_original_max_position_embeddings,
            "rope_scaling.original_max_position_embeddings (llama3)"),
      field("model.embedding_key", c.model.embedding_key, "target tensor holding embed_tokens"),
      field("model.lm_head_key", c.model.lm_head_key,
            "target tensor holding lm_head (absent: tied to the embedding)"),
      field("model.norm_key", c.model.norm_key, "target tensor holding the final norm"),
      field("model.vocab_mapping", c.model.vocab_mapping,
            "safetensors file with t2d/d2t; empty: build from the data"),
      field(
          "model.attention", c.model.attention,
          "local attention kernel: auto (cudnn on GPU, flash on CPU) | reference | flash | cudnn"),
      field("model.loss_chunk", c.model.loss_chunk,
            "rows per chunk of the fused lm_head + loss (memory vs speed)"),
      field("model.recompute_swiglu", c.model.recompute_swiglu,
            "keep only the gate and up outputs for backward, recompute silu and the product (2 "
            "of the MLP's 4 [tokens x intermediate] activations per TTT step; the backward "
            "kernel rewrites the product in its own pass, no measurable time); false keeps them; "
            "model.recompute_mlp wins"),
      field("model.recompute_mlp", c.model.recompute_mlp,
            "recompute the MLP in backward instead of keeping its activations (long sequences)"),
      field("training.ttt_length", c.training.ttt_length, "TTT unroll length T"),
      field("training.max_steps", c.training.max_steps,
            "optimizer steps; 0 = as many as num_epochs give. With a fixed manifest the run "
            "takes min(max_steps, samples x num_epochs / (D x grad_accum)) and logs a cap"),
      field("training.num_epochs", c.training.num_epochs, "passes over a fixed manifest"),
      field("training.lr", c.training.lr, "peak learning rate"),
      field("training.min_lr", c.training.min_lr, "learning rate at the end of the cosine"),
      field("training.warmup_ratio", c.training.warmup_ratio,
            "fraction of steps in linear warm-up"),
      field("training.weight_decay", c.training.weight_decay, "AdamW weight decay"),
      field("training.max_grad_norm", c.training.max_grad_norm, "global-norm clip; 0 disables"),
      field("training.grad_accum", c.training.grad_accum, "micro-batches per optimizer step"),
      field("training.seed", c.training.seed, "seed of initialisation and data order"),
      field("training.stop_after", c.training.stop_after,
            "checkpoint and stop after this step, as if pre-empted (0: off)"),
      field("training.eval_interval", c.training.eval_interval,
            "steps between held-out evaluations (0: only at the end)"),
      field("training.log_interval", c.training.log_interval,
            "steps between progress lines on the console"),
      field("training.ttt_decay", c.training.ttt_decay, "loss weight of step k is ttt_decay^k"),
      field("training.ttt_weights", c.training.ttt_weights,
            "explicit per-step loss weights (length ttt_length)"),
      field("checkpoint.interval", c.checkpoint.interval,
            "steps between checkpoints; 0 = at the end only"),
      field("checkpoint.keep", c.checkpoint.keep, "how many recent checkpoints to keep"),
  };
}

Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    EAGLET_FAIL("config error: {}: not valid YAML: {}", origin, e.what());
  }
  return parse_node(root, origin, overrides);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  EAGLET_CHECK(in.good(), "config error: {}: file not found or unreadable", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

std::vector<std::string> validate(const Config& c, int64_t world_size) {
  std::vector<std::string> errs;
  auto rule = [&](bool ok, const std::string& key, const auto& value, const std::string& text) {
    if (!ok) errs.push_back(fmt::format("config error: {}={}: {}", key, value, text));
  };
  const auto& p = c.parallel;
  const auto& m = c.model.config;
  const auto& t = c.training;
  rule(!c.output_dir.empty(), "output_dir", "''", "must name a folder");
  rule(p.ulysses >= 1, "parallel.ulysses", p.ulysses, "must be >= 1");
  rule(p.ring >= 1, "parallel.ring", p.ring, "must be >= 1");
  int64_t sp = std::max<int64_t>(p.ulysses, 1) * std::max<int64_t>(p.ring, 1);
  rule(world_size % sp == 0, "parallel.ulysses*parallel.ring", sp,
       fmt::format("world size {} must be divisible by ulysses*ring", world_size));
  if (p.ulysses >= 1) {
    rule(m.num_attention_heads % p.ulysses == 0, "model.config.num_attention_heads",
         m.num_attention_heads,
         fmt::format("must be divisible by parallel.ulysses ({})", p.ulysses));
    rule(m.num_key_value_heads % p.ulysses == 0, "model.config.num_key_value_heads",
         m.num_key_value_heads,
         fmt::format("must be divisible by parallel.ulysses ({})", p.ulysses));
  }
  for (auto [key, v] : std::initializer_list<std::pair<const char*, int64_t>>{
           {"model.config.hidden_size", m.hidden_size},
           {"model.config.num_attention_heads", m.num_attention_heads},
           {"model.config.num_key_value_heads", m.num_key_value_heads},
           {"model.config.head_dim", m.head_dim},
           {"model.config.intermediate_size", m.intermediate_size},
           {"model.config.vocab_size", m.vocab_size},
           {"model.config.draft_vocab_size", m.draft_vocab_size},
           {"model.config.target_hidden_size", m.target_hidden_size},
           {"model.config.num_aux_hidden_states", m.num_aux_hidden_states},
           {"model.config.max_position_embeddings", m.max_position_embeddings}})
    rule(v >= 1, key, v, "must be >= 1");
  if (m.num_key_value_heads >= 1)
    rule(m.num_attention_heads % m.num_key_value_heads == 0, "model.config.num_attention_heads",
         m.num_attention_heads,
         fmt::format("must be divisible by model.config.num_key_value_heads ({})",
                     m.num_key_value_heads));
  rule(m.head_dim % 2 == 0, "model.config.head_dim", m.head_dim,
       "must be even (RoPE rotates halves)");
  rule(m.draft_vocab_size <= m.vocab_size, "model.config.draft_vocab_size", m.draft_vocab_size,
       fmt::format("must be <= model.config.vocab_size ({})", m.vocab_size));
  rule(m.rms_norm_eps > 0, "model.config.rms_norm_eps", m.rms_norm_eps, "must be > 0");
  rule(m.rope_theta > 0, "model.config.rope_theta", m.rope_theta, "must be > 0");

  auto msg = one_of(m.rope_type, {"none", "linear", "llama3"});
  rule(msg.empty(), "model.config.rope_type", m.rope_type, msg);
  rule(m.rope_factor > 0, "model.config.rope_factor", m.rope_factor, "must be > 0");
  rule(m.rope_high_freq_factor > m.rope_low_freq_factor, "model.config.rope_high_freq_factor",
       m.rope_high_freq_factor,
       fmt::format("must be > model.config.rope_low_freq_factor ({})", m.rope_low_freq_factor));
  msg = one_of(c.model.attention, {"auto", "reference", "flash", "cudnn"});
  rule(msg.empty(), "model.attention", c.model.attention, msg);
  msg = one_of(c.parallel.ring_balance, {"zigzag", "zigzag_exchange", "none"});
  rule(msg.empty(), "parallel.ring_balance", c.parallel.ring_balance, msg);
  rule(c.model.loss_chunk >= 1, "model.loss_chunk", c.model.loss_chunk, "must be >= 1");
  msg = one_of(c.runtime.dtype, {"auto", "float32", "bfloat16", "float64"});
  rule(msg.empty(), "runtime.dtype", c.runtime.dtype, msg);

  msg = one_of(c.runtime.device, {"auto", "cpu", "cuda"});
  rule(msg.empty(), "runtime.device", c.runtime.device, msg);
  msg = one_of(c.runtime.collectives, {"auto", "nccl", "host"});
  rule(msg.empty(), "runtime.collectives", c.runtime.collectives, msg);
  rule(!(c.runtime.collectives == "nccl" && c.runtime.device == "cpu"), "runtime.collectives",
       c.runtime.collectives, "nccl needs runtime.device cuda (or auto on a GPU machine)");
  rule(c.runtime.threads >= 0, "runtime.threads", c.runtime.threads, "must be >= 0");
  rule(c.runtime.timeout_s >= 0, "runtime.timeout_s", c.runtime.timeout_s, "must be >= 0");
  msg = one_of(c.runtime.log_level, {"trace", "debug", "info", "warn", "error"});
  rule(msg.empty(), "runtime.log_level", c.runtime.log_level, msg);

  msg = one_of(c.data.store, {"dir", "mooncake"});
  rule(msg.empty(), "data.store", c.data.store, msg);
  rule(c.data.store != "dir" || !c.data.path.empty(), "data.path", "''",
       "must name a folder when data.store=dir");
  msg = one_of(c.data.mooncake_protocol, {"tcp", "rdma"});
  rule(msg.empty(), "data.mooncake_protocol", c.data.mooncake_protocol, msg);
  rule(c.data.mooncake_segment_size >= 0, "data.mooncake_segment_size",
       c.data.mooncake_segment_size, "must be >= 0");
  rule(c.data.mooncake_buffer_size > 0, "data.mooncake_buffer_size", c.data.mooncake_buffer_size,
       "must be > 0");
  msg = one_of(c.data.on_error, {"fail", "skip"});
  rule(msg.empty(), "data.on_error", c.data.on_error, msg);
  rule(c.data.max_bad_fraction >= 0 && c.data.max_bad_fraction <= 1, "data.max_bad_fraction",
       c.data.max_bad_fraction, "must be in [0, 1]");
  rule(c.data.max_seq_length > t.ttt_length, "data.max_seq_length", c.data.max_seq_length,
       fmt::format("must be > training.ttt_length ({})", t.ttt_length));

  rule(t.ttt_length >= 1, "training.ttt_length", t.ttt_length, "must be >= 1");
  rule(!c.data.follow || t.max_steps > 0, "data.follow", "true",
       "needs training.max_steps > 0 (a growing manifest has no end)");
  rule(c.data.manifest_wait_s >= 0, "data.manifest_wait_s", c.data.manifest_wait_s, "must be >= 0");
  rule(c.data.prefetch >= 1, "data.prefetch", c.data.prefetch, "must be >= 1");
  rule(c.data.vocab_samples >= 1, "data.vocab_samples", c.data.vocab_samples, "must be >= 1");
  rule(t.stop_after >= 0, "training.stop_after", t.stop_after, "must be >= 0");
  rule(t.eval_interval >= 0, "training.eval_interval", t.eval_interval, "must be >= 0");
  rule(t.log_interval >= 1, "training.log_interval", t.log_interval, "must be >= 1");
  rule(t.max_steps >= 0, "training.max_steps", t.max_steps, "must be >= 0");
  rule(t.num_epochs >= 1, "training.num_epochs", t.num_epochs, "must be >= 1");
  rule(t.lr > 0, "training.lr", t.lr, "must be > 0");
  rule(t.min_lr >= 0 && t.min_lr <= t.lr, "training.min_lr", t.min_lr,
       fmt::format("must be in [0, training.lr ({})]", t.lr));
  rule(t.warmup_ratio >= 0 && t.warmup_ratio <= 1, "training.warmup_ratio", t.warmup_ratio,
       "must be in [0, 1]");
  rule(t.weight_decay >= 0, "training.weight_decay", t.weight_decay, "must be >= 0");
  rule(t.max_grad_norm >= 0, "training.max_grad_norm", t.max_grad_norm,
       "must be >= 0 (0 disables clipping)");
  rule(t.grad_accum >= 1, "training.grad_accum", t.grad_accum, "must be >= 1");
  rule(t.ttt_decay > 0 && t.ttt_decay <= 1, "training.ttt_decay", t.ttt_decay, "must be in (0, 1]");
  rule(t.ttt_weights.empty() || static_cast<int64_t>(t.ttt_weights.size()) == t.ttt_length,
       "training.ttt_weights", fmt::format("[{}]", fmt::join(t.ttt_weights, ", ")),
       fmt::format("must have training.ttt_length ({}) entries", t.ttt_length));

  rule(c.checkpoint.interval >= 0, "checkpoint.interval", c.checkpoint.interval, "must be >= 0");
  rule(c.checkpoint.keep >= 1, "checkpoint.keep", c.checkpoint.keep, "must be >= 1");
  return errs;
}

void check_valid(const Config& cfg, int64_t world_size) {
  throw_if_any(validate(cfg, world_size));
}

namespace {
// Nested keys in field-table order, for emitting the effective config section by section.
struct KeyTree {
  YAML::Node leaf;
  std::vector<std::pair<std::string, KeyTree>> children;
  KeyTree& child(const std::string& name) {
    for (auto& [n, t] : children)
      if (n == name) return t;
    children.emplace_back(name, KeyTree{});
    return children.back().second;
  }
};

void emit(YAML::Emitter& e, const KeyTree& t) {
  e << YAML::BeginMap;
  for (const auto& [name, sub] : t.children) {
    e << YAML::Key << name << YAML::Value;
    if (sub.children.empty()) {
      if (sub.leaf.IsSequence()) e << YAML::Flow;
      e << sub.leaf;
    } else {
      emit(e, sub);
    }
  }
  e << YAML::EndMap;
}
}  // namespace

std::string to_yaml(const Config& cfg) {
  Config copy = cfg;
  KeyTree root;
  for (auto& f : fields(copy)) {
    KeyTree* node = &root;
    for (const auto& part : split(f.key, '.')) node = &node->child(part);
    node->leaf = f.get();
  }
  YAML::Emitter e;
  emit(e, root);
  return std::string(e.c_str()) + "\n";
}

std::string reference_yaml() {
  Config defaults;
  std::string out =
      "# eaglet reference configuration: every key with its default and meaning, generated from "
      "the\n"
      "# config field table (eaglet config --reference-yaml; a test keeps this file in step).\n"
      "# Override any key on the command line: --set training.lr=3e-4 --set parallel.ring=2\n"
      "# model.config may instead name the draft's HF config.json: model: {config: "
      "path/config.json}\n";
  std::vector<std::string> open;  // the sections of the previous key
  for (auto& f : fields(defaults)) {
    auto parts = split(f.key, '.');
    size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common])
      ++common;
    if (common == 0) out += "\n";
    for (size_t i = common; i + 1 < parts.size(); ++i)
      out += fmt::format("{:{}}{}:\n", "", 2 * i, parts[i]);
    open.assign(parts.begin(), parts.end() - 1);
    YAML::Emitter e;
    e << YAML::Flow << f.get();
    out += fmt::format("{:{}}{}: {}  # {}\n", "", 2 * (parts.size() - 1), parts.back(), e.c_str(),
                       f.doc);
  }
  return out;
}

std::string reference_markdown() {
  Config defaults;
  std::string out = "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (auto& f : fields(defaults)) {
    auto v = f.get();
    std::string text = node_text(v);
    if (text.empty()) text = "''";
    std::string doc;
    for (char ch : f.doc) doc += ch == '|' ? std::string("\\|") : std::string(1, ch);
    out += fmt::format("| `{}` | {} | `{}` | {} |\n", f.key, f.type, text, doc);
  }
  return out;
}

}  // namespace eaglet
