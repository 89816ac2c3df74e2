// The parts of the target model (an HF folder) the draft trainer needs: the token embedding the
// draft reuses (frozen), and the final norm and lm_head that turn target hidden states into the
// target distribution. Shapes are checked against the folder's config.json.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace eaglet::io {

struct TargetHead {
  at::Tensor embed_tokens;  // [Vt, Ht] float32, CPU
  at::Tensor norm;          // [Ht] float32, CPU
  at::Tensor lm_head;       // [Vt, Ht] float32, CPU; the embedding itself when tied
  bool tied = false;        // lm_head is the embedding (tie_word_embeddings, or no lm_head tensor)
  double rms_norm_eps = 1e-6;
};

// Reads <folder>/config.json (hidden_size, vocab_size, rms_norm_eps, tie_word_embeddings; a
// multimodal config's text_config is used when the top level has no hidden_size) and the three
// tensors through SafetensorsSet. Throws eaglet::Error naming the folder, the tensor and both
// shapes when a tensor is missing or its shape disagrees with config.json.
TargetHead load_target_head(const std::string& folder, const std::string& embedding_key,
                            const std::string& lm_head_key, const std::string& norm_key);

}  // namespace eaglet::io
