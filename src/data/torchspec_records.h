// TorchSpec/SGLang ingestion: turns the per-sample metadata records TorchSpec's producers hand its
// controller (mooncake_key, full tensor_shapes and tensor_dtypes, packed_loss_mask, usp_sharded)
// plus its TORCHSPEC_USP_* layout into manifest entries (DESIGN §2), so their objects train as
// written. `eaglet data ingest` is the command; docs/DATA.md §11 the worked example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/manifest.h"

namespace eaglet::data {

// The layout the producer sharded for. 0 = not known (then a usp_sharded record is refused).
struct UspLayout {
  int64_t sp_size = 0;         // TORCHSPEC_USP_SP_SIZE (U*R)
  int64_t ttt_length = 0;      // TORCHSPEC_USP_TTT_LENGTH (T of the halo)
  int64_t max_seq_length = 0;  // TORCHSPEC_USP_MAX_SEQ_LENGTH (the cut)
  bool sharded_default = false;  // TORCHSPEC_USP_SHARDED_MOONCAKE=1: records without
                                 // usp_sharded are taken as sharded
  std::string origin;            // where the values came from, for messages
};

// The layout from TORCHSPEC_USP_* (env::torchspec_usp); a variable that is set but not a
// positive integer (or 0/1 for _SHARDED_MOONCAKE) is an error naming it.
UspLayout usp_layout_from_env();

// One record (a JSON object) -> the sample's manifest entry. Accepted fields:
//   "mooncake_key" (TorchSpec's name) or "key": the base key, unchanged;
//   "tensor_shapes": {"input_ids": [S] or [1, S], "hidden_states": [.., S, num_aux*Ht],
//                     "last_hidden_states": [.., S, Ht]} (full, unsharded shapes);
//   "tensor_dtypes": optional, torch's names ("torch.bfloat16", "torch.long", ...) or eaglet's;
//   "packed_loss_mask": required (run lengths, DATA.md §3);
//   "metadata": {"usp_sharded": bool} or a top-level "usp_sharded" (default: layout's);
//   "aux_layer_ids": optional list (else `aux_layer_ids`, when given).
// Errors name "records <path>:<line>", the key when known and the field.
ManifestEntry entry_from_torchspec_record(const std::string& text, const UspLayout& layout,
                                          const std::vector<int64_t>& aux_layer_ids,
                                          const std::string& path, int64_t line);

}  // namespace eaglet::data
