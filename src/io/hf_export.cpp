// Checkpoint -> HF Eagle3 draft folder: shapes checked against the draft config, weights cast to
// bf16, d2t / t2d checked for consistency and copied, config completed, folder renamed into place.
#include "io/hf_export.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/tensor_text.h"
#include "io/files.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/eagle3.h"

namespace eaglet::io {
namespace {

// Tensors a checkpoint may hold that are not exported: the frozen target embedding.
const std::set<std::string> kNotExported = {"embed_tokens.weight"};

int64_t positive(const nlohmann::json& cfg, const std::string& key, const std::string& path) {
  int64_t v = json_int(cfg, key, path);
  EAGLET_CHECK(v > 0, "{}: key \"{}\" must be > 0, got {}", path, key, v);
  return v;
}

bool is_float_dtype(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64";
}

std::string export_name(const std::string& name, bool vllm_names) {
  const std::string prefix = "midlayer.";
  if (vllm_names && name.rfind(prefix, 0) == 0) return "layers.0." + name.substr(prefix.size());
  return name;
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

void export_draft(const std::string& checkpoint_dir, const std::string& out_dir, bool vllm_names) {
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
  const nlohmann::ordered_json out_cfg = export_config(cfg, config_path);
  const std::vector<DraftTensor> expected = draft_tensors(cfg, config_path);
  SafetensorsFile weights(weights_path);

  // Every tensor present with the config's shape and the right dtype, and nothing unexpected.
  std::set<std::string> known(kNotExported);
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

  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& t : expected) {
    at::Tensor v = weights.get(t.name);
    if (t.dtype == "float") v = v.to(c10::kBFloat16);
    tensors.emplace_back(export_name(t.name, vllm_names), v);
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
