// Producers of the pre-sharded store: put_sample (one full sample -> P shards in the store + its
// manifest line; used by `eaglet data put` and `eaglet data synth`), the full-sample safetensors
// file, and a hidden seeded teacher that writes learnable synthetic samples and its target head.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/manifest.h"
#include "data/sharding.h"
#include "data/store.h"

namespace eaglet::data {

// Shards `sample` for layout.sp_size / ttt_length / max_seq_length (rows past max_seq_length are
// dropped), puts the 3·P objects (hidden states as bf16, ids as int64), and only then appends the
// manifest line (mask packed from sample.loss_mask). Throws eaglet::Error naming the key when its
// objects already exist or the sample's shapes are wrong. Returns the line written.
// num_aux = hs width / Ht must equal layout.num_aux (unless 0). With `sharded` false the sample
// is written unsharded instead (manifest usp_sharded=false): {key}_hs|_ids|_lhs, all seq_len
// rows, as producers without USP write it; every SP rank of any layout then cuts its own rows.
// `segments` (non-empty): the sample packs documents of these lengths (manifest segments).
ManifestEntry put_sample(Store& store, ManifestWriter& manifest, const std::string& key,
                         const FullSample& sample, const ManifestExpect& layout,
                         bool sharded = true, const std::vector<int64_t>& segments = {});

// A full sample as one safetensors file: hidden_states [S, 3·Ht], input_ids [S],
// last_hidden_states [S, Ht], loss_mask [S] (the input of `eaglet data put`).
FullSample read_full_sample(const std::string& path);
void write_full_sample(const std::string& path, const FullSample& sample);

// The hidden teacher: a small random recurrent model over a vocabulary of V tokens.
//   h_t = tanh(alpha · A h_{t-1} + E[x_t]);  aux = [h_t, tanh(B1 h_t), tanh(B2 tanh(B1 h_t))]
//   lhs_t = rmsnorm(h_t) (unit RMS);          x_{t+1} ~ softmax(W lhs_t)
// So the next token is a function of the stored hidden states (and the current token) and a
// draft trained on them beats chance by far. W, E and a unit norm form its HF target folder.
struct Teacher {
  at::Tensor embed;    // E [V, Ht]
  at::Tensor recur;    // A [Ht, Ht]
  at::Tensor aux1;     // B1 [Ht, Ht]
  at::Tensor aux2;     // B2 [Ht, Ht]
  at::Tensor norm;     // [Ht], ones
  at::Tensor lm_head;  // W [V, Ht]
  double alpha = 0.5;
  double rms_norm_eps = 1e-6;
};
Teacher make_teacher(int64_t vocab_size, int64_t hidden_size, int64_t seed, double rms_norm_eps);
// One sample of `length` tokens (hs and lhs in bf16, as stored), with a random loss mask: a 0-run
// prompt, then alternating answer and gap runs.
// num_aux aux layers: aux_0 = h_t, aux_j = tanh(B aux_{j-1}), B alternating B1, B2 (3: as above).
FullSample teacher_sample(const Teacher& t, int64_t length, uint64_t seed, int64_t num_aux = 3);
// config.json (hidden_size, vocab_size, rms_norm_eps, tie_word_embeddings=false) and
// model.safetensors (model.embed_tokens.weight, model.norm.weight, lm_head.weight; fp32).
void write_teacher_target(const Teacher& t, const std::string& dir);

struct SynthOptions {
  int64_t samples = 16;
  int64_t seed = 0;
  int64_t min_len = 0, max_len = 0;  // 0: max(T + 2, L/4) and L + L/4 (L = data.max_seq_length)
  std::string target_dir;            // empty: <data.path>/target
  std::string full_dir;              // non-empty: also <full_dir>/<key>.safetensors per sample
  std::string key_prefix;            // empty: "synth<seed>"
  int64_t num_aux = 0;               // aux layers per sample; 0: model.config.num_aux_hidden_states
  bool sharded = true;               // false: unsharded objects {key}_hs|_ids|_lhs (usp_sharded)
  int64_t documents = 1;  // > 1: each sample packs this many documents (manifest segments)
};
struct SynthSummary {
  int64_t samples = 0, tokens = 0, loss_tokens = 0;
  int64_t longer_than_max = 0;  // S > data.max_seq_length (cut)
  int64_t not_divisible = 0;    // L % P != 0 (tail padding)
  std::string manifest, target_dir;
};
// Writes the target folder first, then each sample (objects, then its manifest line), into the
// store and manifest the config names, sharded for its parallel layout and TTT length.
SynthSummary synthesize(const Config& cfg, const SynthOptions& opt);

}  // namespace eaglet::data
