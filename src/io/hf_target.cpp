// Loading the target model's embedding, final norm and lm_head from an HF folder.
#include "io/hf_target.h"

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/tensor_text.h"
#include "io/files.h"
#include "io/json_file.h"
#include "io/safetensors.h"

namespace eaglet::io {

TargetHead load_target_head(const std::string& folder, const std::string& embedding_key,
                            const std::string& lm_head_key, const std::string& norm_key) {
  const std::string config_path = join_path(folder, "config.json");
  nlohmann::json top = read_json_object(config_path);
  // Multimodal configs (e.g. Qwen-VL, Llama 4) keep the language model's keys in text_config.
  bool nested =
      !top.contains("hidden_size") && top.contains("text_config") && top["text_config"].is_object();
  const nlohmann::json& cfg = nested ? top["text_config"] : top;
  const std::string where = nested ? config_path + " (text_config)" : config_path;
  const int64_t hidden = json_int(cfg, "hidden_size", where);
  const int64_t vocab = json_int(cfg, "vocab_size", where);
  EAGLET_CHECK(hidden > 0 && vocab > 0, "{}: hidden_size {} and vocab_size {} must be > 0", where,
               hidden, vocab);

  TargetHead head;
  head.rms_norm_eps = json_number(cfg, "rms_norm_eps", where);
  bool tie = json_bool_or(top, "tie_word_embeddings", false, config_path);
  if (nested) tie = json_bool_or(cfg, "tie_word_embeddings", tie, where);

  SafetensorsSet set(folder);
  auto load = [&](const std::string& key, const std::vector<int64_t>& shape) {
    const TensorInfo& ti = set.info(key);  // throws naming the folder and the tensor
    EAGLET_CHECK(ti.shape == shape,
                 "target model {}: tensor '{}' has shape {}, but {} (hidden_size {}, vocab_size "
                 "{}) needs {}",
                 folder, key, shape_text(ti.shape), config_path, hidden, vocab, shape_text(shape));
    return set.get(key).to(c10::kFloat);
  };
  head.embed_tokens = load(embedding_key, {vocab, hidden});
  head.norm = load(norm_key, {hidden});
  if (!tie && !set.has(lm_head_key))
    spdlog::warn(
        "target model {}: no tensor '{}' although tie_word_embeddings is false; using the "
        "embedding '{}' as lm_head",
        folder, lm_head_key, embedding_key);
  head.tied = tie || !set.has(lm_head_key);
  head.lm_head = head.tied ? head.embed_tokens : load(lm_head_key, {vocab, hidden});
  return head;
}

}  // namespace eaglet::io
