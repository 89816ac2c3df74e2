// Eagle3 draft folders on disk: model.safetensors (SGLang names, or vLLM's "layers.0." for the
// midlayer) with d2t/t2d, and an HF config.json. save_draft writes the fp32 checkpoint form that
// `eaglet export` turns into a bf16 SGLang/vLLM folder; load_draft reads either form (init_from).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "core/config.h"
#include "model/eagle3.h"
#include "model/vocab.h"

namespace eaglet::model {

// The draft's HF config.json keys (LlamaForCausalLMEagle3) for this architecture.
nlohmann::json draft_config_json(const DraftArchConfig& cfg);

// Writes <dir>/model.safetensors (fp32 weights, d2t, t2d) and <dir>/config.json; creates <dir>.
void save_draft(const std::string& dir, const Eagle3Weights& w, const DraftArchConfig& cfg,
                const VocabMap& vocab);

// Overwrites the trainable weights of `w` (keeping device and requires_grad) from <dir>'s
// model.safetensors, accepting SGLang or vLLM names and any float dtype; checks every shape
// against `cfg` and names the file and tensor on error. Also reads d2t/t2d into `vocab` when the
// folder has them and `vocab` is not null.
void load_draft(const std::string& dir, const DraftArchConfig& cfg, Eagle3Weights& w,
                VocabMap* vocab);

}  // namespace eaglet::model
