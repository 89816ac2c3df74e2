// Saving and loading Eagle3 draft folders.
#include "model/draft_io.h"

#include <c10/core/GradMode.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace eaglet::model {

nlohmann::json draft_config_json(const DraftArchConfig& c) {
  nlohmann::json j = {
      {"architectures", {"LlamaForCausalLMEagle3"}},
      {"model_type", "llama"},
      {"num_hidden_layers", 1},
      {"hidden_size", c.hidden_size},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"intermediate_size", c.intermediate_size},
      {"vocab_size", c.vocab_size},
      {"draft_vocab_size", c.draft_vocab_size},
      {"target_hidden_size", c.target_hidden_size},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"max_position_embeddings", c.max_position_embeddings},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
  };
  // Written only when not SGLang's fixed 3, so configs of 3-aux drafts stay as they were.
  if (c.num_aux_hidden_states != 3) j["num_aux_hidden_states"] = c.num_aux_hidden_states;
  if (c.rope_type == "none") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", c.rope_type}, {"factor", c.rope_factor}};
    if (c.rope_type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = c.rope_low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = c.rope_high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] =
          c.rope_original_max_position_embeddings;
    }
  }
  // Read back by `eaglet export` (io::config_aux_layer_ids), under the names the engines read.
  if (!c.aux_layer_ids.empty()) {
    j["eagle_aux_hidden_state_layer_ids"] = c.aux_layer_ids;
    j["eagle_config"] = {{"eagle_aux_hidden_state_layer_ids", c.aux_layer_ids},
                         {"use_aux_hidden_state", true}};
  }
  return j;
}

void save_draft(const std::string& dir, const Eagle3Weights& w, const DraftArchConfig& cfg,
                const VocabMap& vocab) {
  io::make_dirs(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : w.trainable())
    tensors.emplace_back(name, t->detach().to(at::kFloat));
  tensors.emplace_back("d2t", vocab.d2t);
  tensors.emplace_back("t2d", vocab.t2d);
  io::write_safetensors(io::join_path(dir, "model.safetensors"), tensors, {{"format", "pt"}});
  io::write_file_synced(io::join_path(dir, "config.json"), draft_config_json(cfg).dump(2) + "\n");
  io::fsync_parent_dir(io::join_path(dir, "config.json"));
}

void load_draft(const std::string& dir, const DraftArchConfig& cfg, Eagle3Weights& w,
                VocabMap* vocab) {
  io::SafetensorsSet files(dir);
  for (auto& [name, t] : w.trainable()) {
    std::string key = name;
    if (!files.has(key) && name.rfind("midlayer.", 0) == 0)
      key = "layers.0." + name.substr(9);  // vLLM naming
    EAGLET_CHECK(files.has(key), "model.init_from={}: tensor {} (or its vLLM name) is missing", dir,
                 name);
    if (name == "fc.weight") {
      // The one shape that depends on the data (its num_aux): say so rather than just "shape".
      const auto want = weight_shape(cfg, name);
      const auto& got = files.info(key).shape;
      EAGLET_CHECK(got == want,
                   "{}: fc.weight is [{}] but this run's draft needs [{}, {}] = "
                   "model.config.num_aux_hidden_states={} aux layers x target_hidden_size={} (the "
                   "draft was trained on data with another num_aux or hidden size)",
                   dir, fmt::join(got, ", "), want[0], want[1], cfg.num_aux_hidden_states,
                   cfg.target_hidden_size);
    }
    auto loaded = files.get(key, weight_shape(cfg, name));
    c10::NoGradGuard no_grad;
    t->copy_(loaded.to(t->device(), t->scalar_type()));
  }
  if (vocab != nullptr && files.has("d2t") && files.has("t2d")) {
    vocab->t2d = files.get("t2d", {cfg.vocab_size}).to(at::kBool);
    vocab->d2t = files.get("d2t", {cfg.draft_vocab_size}).to(at::kLong);
  }
}

}  // namespace eaglet::model
