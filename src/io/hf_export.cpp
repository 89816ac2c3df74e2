// Checkpoint -> HF Eagle3 draft folder: shapes checked against the draft config, weights cast to
// bf16, the target's embedding added, d2t / t2d checked for consistency and copied, config
// completed (aux layer ids included), folder renamed into place.
#include "io/hf_export.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "core/tensor_text.h"
#include "io/files.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/eagle3.h"

namespace eaglet::io {
namespace {

// The frozen target embedding: a checkpoint may hold it; the export takes it from there or from
// the target model.
const char* const kEmbedding = "embed_tokens.weight";

int64_t positive(const nlohmann::json& cfg, const std::string& key, const std::string& path) {
  int64_t v = json_int(cfg, key, path);
  EAGLET_CHECK(v > 0, "{}: key \"{}\" must be > 0, got {}", path, key, v);
  return v;
}

bool is_float_dtype(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64";
}

// The run's model.target and model.embedding_key, as trainer_state.json's "config" (the run's
// YAML, eaglet's own to_yaml) records them; empty target when the file or the key is not there.
std::pair<std::string, std::string> recorded_target(const std::string& checkpoint_dir) {
  const std::string path = join_path(checkpoint_dir, "trainer_state.json");
  std::pair<std::string, std::string> out{"", "model.embed_tokens.weight"};
  if (!is_file(path)) return out;
  const nlohmann::json state = read_json_object(path);
  if (!state.contains("config") || !state["config"].is_string()) return out;
  try {
    const YAML::Node model = YAML::Load(state["config"].get<std::string>())["model"];
    if (model && model["target"] && model["target"].IsScalar())
      out.first = model["target"].as<std::string>();
    if (model && model["embedding_key"] && model["embedding_key"].IsScalar())
      out.second = model["embedding_key"].as<std::string>();
  } catch (const YAML::Exception& e) {
    EAGLET_FAIL("{}: \"config\" is not valid YAML: {}", path, e.what());
  }
  return out;
}

// embed_tokens [Vt, H] in bf16: from `target` when given, else the checkpoint's own tensor, else
// the run's model.target (how the trainer loads it: io::load_target_head, `model.embedding_key`
// of the target's safetensors, any float dtype).
at::Tensor export_embedding(const std::string& checkpoint_dir, const SafetensorsFile& weights,
                            const std::string& target, const std::vector<int64_t>& shape) {
  std::string folder = target, key = "model.embed_tokens.weight";
  if (folder.empty() && weights.has(kEmbedding)) {
    const TensorInfo& ti = weights.info(kEmbedding);
    EAGLET_CHECK(ti.shape == shape && is_float_dtype(ti.dtype),
                 "{}: tensor '{}' is {} {}, the draft config needs a float {}", weights.path(),
                 kEmbedding, ti.dtype, shape_text(ti.shape), shape_text(shape));
    return weights.get(kEmbedding).to(c10::kBFloat16);
  }
  const auto [recorded, recorded_key] = recorded_target(checkpoint_dir);
  if (folder.empty()) folder = recorded;
  if (target.empty() || target == recorded) key = recorded_key;
  EAGLET_CHECK(!folder.empty(),
               "export: {} holds no '{}' and its trainer_state.json names no model.target: pass "
               "--target DIR (the target model's HF folder) or --no-embeddings",
               checkpoint_dir, kEmbedding);
  EAGLET_CHECK(is_dir(folder),
               "export: the target model {} (for '{}') is not a folder: pass --target DIR or "
               "--no-embeddings",
               folder, kEmbedding);
  SafetensorsSet set(folder);
  EAGLET_CHECK(set.has(key),
               "export: target model {} has no tensor '{}' (the embedding the draft was trained "
               "with); pass --target DIR or --no-embeddings",
               folder, key);
  const TensorInfo& ti = set.info(key);
  EAGLET_CHECK(ti.shape == shape && is_float_dtype(ti.dtype),
               "export: target model {}: tensor '{}' is {} {}, the draft config needs a float {} "
               "(vocab_size, hidden_size)",
               folder, key, ti.dtype, shape_text(ti.shape), shape_text(shape));
  return set.get(key).to(c10::kBFloat16);
}

// Where the engines read the aux layer ids (the target layers the draft's fc takes):
// - SGLang, python/sglang/srt/model_executor/model_runner.py (ModelRunner.__init__, EAGLE3): the
//   draft hf_config's `eagle_config["eagle_aux_hidden_state_layer_ids"]` and
//   `eagle_config.get("use_aux_hidden_state", True)`; without them it captures its default layers.
// - vLLM, vllm/v1/worker/gpu_model_runner.py (_get_eagle3_aux_layers_from_config): the draft
//   hf_config's top-level `eagle_aux_hidden_state_layer_ids`, else
//   `eagle_config["eagle_aux_hidden_state_layer_ids"]`; vllm/model_executor/models/
//   llama_eagle3.py reads `eagle_config["use_aux_hidden_state"]` (default true).
// Both are written, with the same ids.
void set_aux_layer_ids(nlohmann::ordered_json& out, const std::vector<int64_t>& ids) {
  nlohmann::ordered_json eagle =
      out.contains("eagle_config") && out["eagle_config"].is_object() ? out["eagle_config"]
                                                                      : nlohmann::ordered_json::object();
  eagle["eagle_aux_hidden_state_layer_ids"] = ids;
  eagle["use_aux_hidden_state"] = true;
  out["eagle_config"] = eagle;
  out["eagle_aux_hidden_state_layer_ids"] = ids;
}

// Every draft id must map to a target id inside the vocabulary that t2d marks, and t2d must mark
// exactly Vd ids: otherwise the engine would map draft tokens to the wrong target tokens.
void check_vocab_map(const at::Tensor& d2t, const at::Tensor& t2d, const std::string& file) {
  const int64_t vd = d2t.numel(), vt = t2d.numel();
  const int64_t* off = d2t.data_ptr<int64_t>();
  const bool* mark = t2d.data_ptr<bool>();
  int64_t marked = 0;
  for (int64_t i = 0; i < vt; ++i) marked += mark[i] ? 1 : 0;
  EAGLET_CHECK(marked == vd, "{}: tensor 't2d' marks {} target ids but 'd2t' has {} draft ids",
               file, marked, vd);
  for (int64_t i = 0; i < vd; ++i) {
    const int64_t target = i + off[i];
    EAGLET_CHECK(target >= 0 && target < vt,
                 "{}: tensor 'd2t' maps draft id {} to target id {} (offset {}), outside [0, {})",
                 file, i, target, off[i], vt);
    EAGLET_CHECK(mark[target],
                 "{}: tensor 'd2t' maps draft id {} to target id {}, which 't2d' does "
                 "not mark",
                 file, i, target);
  }
}

}  // namespace

std::vector<DraftTensor> draft_tensors(const nlohmann::json& cfg, const std::string& config_path) {
  const int64_t h = positive(cfg, "hidden_size", config_path);
  const int64_t heads = positive(cfg, "num_attention_heads", config_path);
  const int64_t kv = positive(cfg, "num_key_value_heads", config_path);
  int64_t d = 0;
  if (cfg.contains("head_dim") && !cfg["head_dim"].is_null()) {
    d = positive(cfg, "head_dim", config_path);
  } else {
    EAGLET_CHECK(
        h % heads == 0,
        "{}: no \"head_dim\" and hidden_size {} is not divisible by num_attention_heads {}",
        config_path, h, heads);
    d = h / heads;
  }
  const int64_t inter = positive(cfg, "intermediate_size", config_path);
  const int64_t vt = positive(cfg, "vocab_size", config_path);
  const int64_t vd = positive(cfg, "draft_vocab_size", config_path);
  const int64_t ht = cfg.contains("target_hidden_size") && !cfg["target_hidden_size"].is_null()
                         ? positive(cfg, "target_hidden_size", config_path)
                         : h;
  EAGLET_CHECK(vd <= vt, "{}: draft_vocab_size {} exceeds vocab_size {}", config_path, vd, vt);
  // Names and shapes come from the model's own table, so export and training cannot disagree.
  DraftArchConfig arch;
  arch.hidden_size = h;
  arch.num_attention_heads = heads;
  arch.num_key_value_heads = kv;
  arch.head_dim = d;
  arch.intermediate_size = inter;
  arch.vocab_size = vt;
  arch.draft_vocab_size = vd;
  arch.target_hidden_size = ht;
  // fc is [H, num_aux_hidden_states·Ht]; written by eaglet only when not 3.
  arch.num_aux_hidden_states = json_int_or(cfg, "num_aux_hidden_states", 3, config_path);
  std::vector<DraftTensor> out;
  const model::Eagle3Weights names;
  for (const auto& [name, t] : names.trainable())
    out.push_back({name, model::weight_shape(arch, name), "float"});
  out.push_back({"d2t", {vd}, "I64"});
  out.push_back({"t2d", {vt}, "BOOL"});
  return out;
}

std::vector<int64_t> config_aux_layer_ids(const nlohmann::json& cfg,
                                          const std::string& config_path) {
  auto read = [&](const nlohmann::json& v, const std::string& key) {
    std::vector<int64_t> ids;
    EAGLET_CHECK(v.is_array() && !v.empty(), "{}: {} must be a list of layer ids, got {}",
                 config_path, key, v.dump());
    for (const auto& x : v) {
      EAGLET_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0,
                   "{}: {} must hold non-negative integers, got {}", config_path, key, v.dump());
      ids.push_back(x.get<int64_t>());
    }
    return ids;
  };
  const char* key = "eagle_aux_hidden_state_layer_ids";
  if (cfg.contains("eagle_config") && cfg["eagle_config"].is_object() &&
      cfg["eagle_config"].contains(key) && !cfg["eagle_config"][key].is_null())
    return read(cfg["eagle_config"][key], std::string("eagle_config.") + key);
  if (cfg.contains(key) && !cfg[key].is_null()) return read(cfg[key], key);
  return {};
}

nlohmann::ordered_json export_config(const nlohmann::json& cfg, const std::string& config_path) {
  // What the exported model is, whatever the checkpoint says; contradictions are errors because
  // the engine would build a different network from the same weights.
  EAGLET_CHECK(json_int_or(cfg, "num_hidden_layers", 1, config_path) == 1,
               "{}: num_hidden_layers is {}, but an Eagle3 draft has exactly one layer",
               config_path, cfg["num_hidden_layers"].dump());
  if (cfg.contains("hidden_act") && !cfg["hidden_act"].is_null())
    EAGLET_CHECK(cfg["hidden_act"] == "silu",
                 "{}: hidden_act is {}, but eaglet trains a SiLU MLP (\"silu\")", config_path,
                 cfg["hidden_act"].dump());
  EAGLET_CHECK(!json_bool_or(cfg, "attention_bias", false, config_path),
               "{}: attention_bias is true, but eaglet's draft has no biases", config_path);
  const int64_t h = positive(cfg, "hidden_size", config_path);
  const int64_t heads = positive(cfg, "num_attention_heads", config_path);

  nlohmann::ordered_json out;
  out["architectures"] = {"LlamaForCausalLMEagle3"};
  out["model_type"] = "llama";
  out["hidden_size"] = h;
  out["num_attention_heads"] = heads;
  out["num_key_value_heads"] = positive(cfg, "num_key_value_heads", config_path);
  out["head_dim"] = json_int_or(cfg, "head_dim", h / heads, config_path);
  out["intermediate_size"] = positive(cfg, "intermediate_size", config_path);
  out["vocab_size"] = positive(cfg, "vocab_size", config_path);
  out["draft_vocab_size"] = positive(cfg, "draft_vocab_size", config_path);
  const int64_t ht = json_int_or(cfg, "target_hidden_size", h, config_path);
  if (ht != h) out["target_hidden_size"] = ht;
  out["num_hidden_layers"] = 1;
  out["hidden_act"] = "silu";
  out["rms_norm_eps"] = json_number(cfg, "rms_norm_eps", config_path);
  out["rope_theta"] = json_number(cfg, "rope_theta", config_path);
  nlohmann::json scaling = cfg.contains("rope_scaling") ? cfg["rope_scaling"] : nlohmann::json();
  EAGLET_CHECK(scaling.is_null() || scaling.is_object(),
               "{}: rope_scaling must be null or an object, got {}", config_path, scaling.dump());
  if (scaling.is_object()) {
    std::string type = scaling.value("rope_type", scaling.value("type", std::string("default")));
    if (type == "default" || type == "none") scaling = nullptr;
  }
  out["rope_scaling"] = scaling;
  out["max_position_embeddings"] = positive(cfg, "max_position_embeddings", config_path);
  out["tie_word_embeddings"] = false;
  out["attention_bias"] = false;
  out["torch_dtype"] = "bfloat16";
  for (const auto& [key, value] : cfg.items())
    if (!out.contains(key) && key != "target_hidden_size") out[key] = value;
  return out;
}

void export_draft(const std::string& checkpoint_dir, const std::string& out_dir,
                  const ExportOptions& options) {
  const std::string out = strip_trailing_slashes(out_dir);  // "out/" names the folder "out"
  const std::string config_path = join_path(checkpoint_dir, "config.json");
  const std::string weights_path = join_path(checkpoint_dir, "model.safetensors");
  EAGLET_CHECK(is_dir(checkpoint_dir), "export: checkpoint folder {} does not exist",
               checkpoint_dir);
  EAGLET_CHECK(is_file(config_path), "export: {} is missing (the draft's config)", config_path);
  EAGLET_CHECK(is_file(weights_path), "export: {} is missing (the draft's weights)", weights_path);
  if (path_exists(out))
    EAGLET_CHECK(is_dir(out) && list_dir(out).empty(),
                 "export: output {} exists and is not an empty folder; remove it or choose another",
                 out_dir);

  const nlohmann::json cfg = read_json_object(config_path);
  nlohmann::ordered_json out_cfg = export_config(cfg, config_path);
  std::vector<int64_t> aux = options.aux_layer_ids;
  if (aux.empty()) aux = config_aux_layer_ids(cfg, config_path);
  if (!aux.empty())
    set_aux_layer_ids(out_cfg, aux);
  else
    spdlog::warn(
        "export: no aux layer ids (no --aux-layer-ids, and {} has neither "
        "eagle_config.eagle_aux_hidden_state_layer_ids nor eagle_aux_hidden_state_layer_ids): "
        "config.json names none, so SGLang and vLLM capture their default target layers; pass "
        "--aux-layer-ids with the layers the training data was produced from",
        config_path);
  const std::vector<DraftTensor> expected = draft_tensors(cfg, config_path);
  SafetensorsFile weights(weights_path);

  // Every tensor present with the config's shape and the right dtype, and nothing unexpected.
  std::set<std::string> known = {kEmbedding};
  std::vector<std::string> missing;
  for (const auto& t : expected)
    if (!weights.has(t.name)) missing.push_back(t.name);
  EAGLET_CHECK(missing.empty(), "{}: missing tensor{} '{}' (the file holds {} tensors)",
               weights_path, missing.size() > 1 ? "s" : "", fmt::join(missing, "', '"),
               weights.tensors().size());
  for (const auto& t : expected) {
    known.insert(t.name);
    const TensorInfo& ti = weights.info(t.name);
    EAGLET_CHECK(ti.shape == t.shape, "{}: tensor '{}' has shape {}, but {} needs {}", weights_path,
                 t.name, shape_text(ti.shape), config_path, shape_text(t.shape));
    if (t.dtype == "float")
      EAGLET_CHECK(is_float_dtype(ti.dtype), "{}: tensor '{}' has dtype {}, expected a float type",
                   weights_path, t.name, ti.dtype);
    else
      EAGLET_CHECK(ti.dtype == t.dtype, "{}: tensor '{}' has dtype {}, expected {}", weights_path,
                   t.name, ti.dtype, t.dtype);
  }
  std::vector<std::string> unknown;
  for (const auto& kv : weights.tensors())
    if (!known.count(kv.first)) unknown.push_back(kv.first);
  EAGLET_CHECK(unknown.empty(),
               "{}: unexpected tensors {} (an Eagle3 draft has none of them; was this checkpoint "
               "written by another model?)",
               weights_path, fmt::join(unknown, ", "));

  // SGLang names (midlayer.*) for both engines: vLLM's Eagle3 LlamaModel.load_weights renames
  // "midlayer." to "layers.0." itself, while SGLang's LlamaForCausalLMEagle3.load_weights skips
  // names it does not know, so a "layers.0." export would leave SGLang's decoder at its initial
  // values.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  if (options.embeddings)
    tensors.emplace_back(kEmbedding,
                         export_embedding(checkpoint_dir, weights, options.target,
                                          {out_cfg["vocab_size"].get<int64_t>(),
                                           out_cfg["hidden_size"].get<int64_t>()}));
  for (const auto& t : expected) {
    at::Tensor v = weights.get(t.name);
    if (t.dtype == "float") v = v.to(c10::kBFloat16);
    tensors.emplace_back(t.name, v);
  }
  check_vocab_map(weights.get("d2t"), weights.get("t2d"), weights_path);

  // Write into <out>.tmp, then rename: a failure leaves nothing at out_dir.
  const std::string tmp = out + ".tmp";
  make_dirs(parent_dir(out));
  remove_tree(tmp);  // left over from an interrupted export
  EAGLET_CHECK(::mkdir(tmp.c_str(), 0755) == 0, "export: cannot create temporary folder {}: {}",
               tmp, std::strerror(errno));
  try {
    write_safetensors(join_path(tmp, "model.safetensors"), tensors,
                      {{"format", "pt"}, {"producer", "eaglet export"}});
    write_file_synced(join_path(tmp, "config.json"), out_cfg.dump(2) + "\n");
    fsync_parent_dir(join_path(tmp, "config.json"));
    if (is_dir(out)) ::rmdir(out.c_str());  // checked empty above
    EAGLET_CHECK(::rename(tmp.c_str(), out.c_str()) == 0, "export: rename of {} to {} failed: {}",
                 tmp, out_dir, std::strerror(errno));
    fsync_parent_dir(out);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
}

}  // namespace eaglet::io
