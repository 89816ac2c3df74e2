// The run configuration: YAML -> typed structs with defaults -> one validate() -> const&.
// Every key is one entry of a field table (fields()), which parsing, --set overrides, the dump of
// the effective config and the generated config reference all share, so they cannot drift apart.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace eaglet {

struct ParallelConfig {
  int64_t ulysses = 1;                  // U: Ulysses degree (heads scattered, sequence gathered)
  int64_t ring = 1;                     // R: ring degree (KV blocks rotated)
  std::string ring_balance = "zigzag";  // zigzag | zigzag_exchange | none: ring balance
};

struct RuntimeConfig {
  std::string device = "auto";     // auto | cpu | cuda
  int64_t threads = 1;             // intra-op threads per rank; 0 = LibTorch's default
  std::string log_level = "info";  // trace | debug | info | warn | error
  std::string dtype =
      "auto";  // compute dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float64
  std::string collectives = "auto";  // auto | nccl | host (CUDA tensors through MPI on the host)
  int64_t timeout_s = 600;  // watchdog: no progress this long (a hung peer) ends the job, exit 1
};

struct DataConfig {
  std::string store = "dir";  // dir | mooncake
  std::string path = "data/store";
  std::string manifest;  // default: <path>/manifest.jsonl
  int64_t max_seq_length = 4096;
  std::string on_error = "fail";   // fail | skip
  double max_bad_fraction = 0.05;  // above this fraction of samples skipped/neutralised: exit 1
  bool consume = false;
  std::string
      eval_manifest;    // held-out samples (same store) evaluated every training.eval_interval
  bool follow = false;  // the manifest grows while training (stream; needs max_steps)
  int64_t manifest_wait_s = 600;  // how long to wait for a sample a producer has not written yet
  int64_t prefetch = 4;           // samples read ahead per rank
  int64_t vocab_samples = 1000;   // samples counted to build t2d/d2t when no mapping is given
  // mooncake backend (the store's master, metadata server and transfer protocol)
  std::string mooncake_master = "127.0.0.1:50051";
  std::string mooncake_metadata = "http://127.0.0.1:8090/metadata";
  std::string mooncake_protocol = "tcp";  // tcp | rdma
  std::string mooncake_device;            // RDMA device names, empty for tcp
  std::string mooncake_local_hostname = "127.0.0.1";
  int64_t mooncake_segment_size = 0;  // bytes this process contributes (0: pure client)
  int64_t mooncake_buffer_size = 256LL * 1024 * 1024;  // local transfer buffer
};

// The draft's architecture (HF config.json keys of a LlamaForCausalLMEagle3).
struct DraftArchConfig {
  int64_t hidden_size = 64;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 16;
  int64_t intermediate_size = 128;
  int64_t vocab_size = 256;         // target vocabulary Vt
  int64_t draft_vocab_size = 128;   // Vd
  int64_t target_hidden_size = 64;  // Ht
  int64_t num_aux_hidden_states = 3;  // aux layers of the target in hs: fc is [H, this·Ht]
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;
  // rope_scaling of HF configs: none | linear | llama3 (JSON "rope_type" or "type").
  std::string rope_type = "none";
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position_embeddings = 8192;
  // The target layers the training data's aux hidden states came from, when model.config names a
  // config.json holding eagle_config.eagle_aux_hidden_state_layer_ids (or the top-level
  // eagle_aux_hidden_state_layer_ids); not used in training, carried into the checkpoint's
  // config.json for `eaglet export`. Empty: unknown.
  std::vector<int64_t> aux_layer_ids;
};

struct ModelConfig {
  std::string target;       // HF folder of the target model (optional for synthetic data)
  std::string init_from;    // existing Eagle3 draft (HF folder) to start from
  std::string config_file;  // set when model.config names a config.json instead of inline keys
  DraftArchConfig config;
  // Tensor names in the target's safetensors (defaults: Llama / Qwen); a missing lm_head falls
  // back to the embedding (tied embeddings).
  std::string embedding_key = "model.embed_tokens.weight";
  std::string lm_head_key = "lm_head.weight";
  std::string norm_key = "model.norm.weight";
  std::string vocab_mapping;       // safetensors file with t2d/d2t; empty: build from data
  std::string attention = "auto";  // auto | reference | flash
  int64_t loss_chunk = 8192;       // rows per chunk of the fused lm_head + loss
  bool recompute_mlp = false;    // recompute the MLP in backward (less memory, ~1 more MLP forward)
  bool recompute_swiglu = true;  // keep only gate/up outputs; silu and product recomputed
};

struct TrainingConfig {
  int64_t ttt_length = 7;
  int64_t max_steps = 0;  // 0: run num_epochs
  int64_t num_epochs = 1;
  double lr = 1e-4;
  double min_lr = 0.0;
  double warmup_ratio = 0.02;
  double weight_decay = 0.0;
  double max_grad_norm = 0.5;  // 0 disables clipping
  int64_t grad_accum = 1;
  int64_t seed = 42;
  int64_t stop_after = 0;     // checkpoint and stop after this step, as if pre-empted (0: off)
  int64_t log_interval = 1;   // steps between progress lines
  int64_t eval_interval = 0;  // steps between held-out evaluations (0: only at the end)
  double ttt_decay = 0.8;     // loss weight of TTT step k is ttt_decay^k ...
  std::vector<double> ttt_weights;  // ... unless given explicitly (length ttt_length)
};

struct CheckpointConfig {
  int64_t interval = 1000;  // steps between checkpoints; 0 = only at the end
  int64_t keep = 3;
};

struct Config {
  std::string output_dir = "runs/eaglet";
  ParallelConfig parallel;
  RuntimeConfig runtime;
  DataConfig data;
  ModelConfig model;
  TrainingConfig training;
  CheckpointConfig checkpoint;
};

// One configurable key. `set` throws a message naming the expected type; `get` returns the value.
struct Field {
  std::string key;   // dotted, e.g. "training.lr"
  std::string type;  // int | float | bool | string | list[float]
  std::string doc;
  std::function<void(const YAML::Node&)> set;
  std::function<YAML::Node()> get;
};

// The field table bound to one Config object (references into `cfg`).
std::vector<Field> fields(Config& cfg);

// Parses a YAML file and `--set key=value` overrides (applied in order) into a Config.
// Unknown keys, keys given twice in one mapping and wrong types (a quoted "10" for an int too)
// throw eaglet::Error listing every problem, each as "config error: <key>=<value>: <rule>".
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text (tests, inline configs); `origin` names the source in messages.
Config parse_config(const std::string& yaml_text, const std::string& origin,
                    const std::vector<std::string>& overrides = {});

// Every broken rule, one line each ("config error: <key>=<value>: <rule>"); empty when valid.
std::vector<std::string> validate(const Config& cfg, int64_t world_size);
// Throws eaglet::Error with all lines of validate() when any rule is broken.
void check_valid(const Config& cfg, int64_t world_size);

// The effective config as YAML text (every key, defaults included).
std::string to_yaml(const Config& cfg);
// Markdown table of every key: name, type, default, meaning (docs/CONFIG.md is generated from it).
std::string reference_markdown();
// configs/reference.yaml: every key with its default, commented with its meaning.
std::string reference_yaml();

}  // namespace eaglet
