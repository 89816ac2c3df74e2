// Export of a training checkpoint to the HF folder SGLang (or vLLM) loads as an Eagle3 draft:
// model.safetensors (bf16 weights, d2t int64, t2d bool) and a LlamaForCausalLMEagle3 config.json.
// The output folder appears complete or not at all (temporary folder, fsync, rename).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace eaglet::io {

// One tensor of a draft checkpoint (SGLang names) with its shape derived from the draft config.
struct DraftTensor {
  std::string name;            // "midlayer.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // [nH*d, 2H]
  std::string dtype;           // "float" for weights (any float dtype), else "I64" / "BOOL"
};

// The tensors of an Eagle3 draft, in export order, for the draft config `cfg` (read from
// `config_path`, named in errors): fc, midlayer.*, norm, lm_head, d2t, t2d. Throws naming the
// file and the key when a needed key is missing or not positive.
std::vector<DraftTensor> draft_tensors(const nlohmann::json& cfg, const std::string& config_path);

// The exported config.json: the checkpoint's keys plus the fixed Eagle3 / Llama keys (DESIGN §7).
// Throws when the checkpoint config contradicts them (hidden_act other than silu, more than one
// layer, attention biases).
nlohmann::ordered_json export_config(const nlohmann::json& cfg, const std::string& config_path);

// Exports <checkpoint_dir>/{model.safetensors,config.json} to <out_dir>/{model.safetensors,
// config.json}; vllm_names renames "midlayer." to "layers.0.". out_dir must not exist or be
// empty. Throws eaglet::Error naming the file and tensor for missing files or tensors, wrong
// shapes or dtypes, or an inconsistent d2t / t2d pair; nothing is left at out_dir then.
void export_draft(const std::string& checkpoint_dir, const std::string& out_dir, bool vllm_names);

}  // namespace eaglet::io
