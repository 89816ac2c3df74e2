// Export of a training checkpoint to the HF folder SGLang and vLLM both load as an Eagle3 draft:
// model.safetensors (bf16 weights with SGLang names, the target's embed_tokens, d2t int64, t2d
// bool) and a LlamaForCausalLMEagle3 config.json with the aux layer ids under the keys both
// engines read. The output folder appears complete or not at all (temporary folder, fsync, rename).
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

struct ExportOptions {
  // Write embed_tokens.weight [Vt, H] (bf16, as the other weights): TorchSpec's strict load needs
  // it, speculators reads it, SGLang and vLLM take it instead of sharing the target's. Taken from
  // `target` when set, else the checkpoint's own embed_tokens.weight, else the run's model.target
  // (and model.embedding_key) recorded in the checkpoint's trainer_state.json.
  bool embeddings = true;
  std::string target;  // HF folder of the target model; empty: as above
  // The target layers whose hidden states the draft was trained on; empty: the checkpoint
  // config's eagle_config.eagle_aux_hidden_state_layer_ids or eagle_aux_hidden_state_layer_ids,
  // else none written (a warning: engines then capture their default layers).
  std::vector<int64_t> aux_layer_ids;
};

// The aux layer ids of `cfg` (eagle_config.eagle_aux_hidden_state_layer_ids, then the top-level
// eagle_aux_hidden_state_layer_ids); empty when neither is there. Throws naming `config_path`
// when one is there but not a list of non-negative integers.
std::vector<int64_t> config_aux_layer_ids(const nlohmann::json& cfg,
                                          const std::string& config_path);

// Exports <checkpoint_dir>/{model.safetensors,config.json} to <out_dir>/{model.safetensors,
// config.json}. out_dir must not exist or be empty. Throws eaglet::Error naming the file and
// tensor for missing files or tensors, wrong shapes or dtypes, an inconsistent d2t / t2d pair,
// or no embedding to be found (naming --target and --no-embeddings); nothing is left at out_dir
// then.
void export_draft(const std::string& checkpoint_dir, const std::string& out_dir,
                  const ExportOptions& options = {});

}  // namespace eaglet::io
