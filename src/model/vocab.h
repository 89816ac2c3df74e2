// The draft vocabulary (DESIGN §4): t2d bool [Vt] marks target tokens in the draft vocabulary,
// d2t int64 [Vd] is an offset (target id of draft id i = i + d2t[i]). Built from the frequencies
// of loss-masked tokens (top Vd, ties to the lower id, then sorted by id) or loaded from a file.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace eaglet::model {

struct VocabMap {
  at::Tensor t2d;  // bool [Vt]
  at::Tensor d2t;  // int64 [Vd]
  // Target ids of the draft vocabulary, ascending: arange(Vd) + d2t.
  at::Tensor draft_to_target() const;
};

// Adds the loss-masked tokens of one sample to counts (int64 [Vt]): ids[j] where loss_mask[j] = 1.
void count_loss_tokens(at::Tensor& counts, const at::Tensor& ids, const at::Tensor& loss_mask);
VocabMap vocab_from_counts(const at::Tensor& counts, int64_t draft_vocab_size);
// Identity mapping when Vd == Vt.
VocabMap identity_vocab(int64_t vocab_size);
// Reads t2d and d2t from a safetensors file, or from model.safetensors in an Eagle3 folder;
// checks their shapes against Vt and Vd and that they describe the same token set.
VocabMap load_vocab(const std::string& path, int64_t vocab_size, int64_t draft_vocab_size);
void save_vocab(const std::string& path, const VocabMap& map);

}  // namespace eaglet::model
