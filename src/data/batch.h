// What the data layer hands the model for one micro-batch: one rank's shard of one sample
// (DESIGN §3), C own rows plus a T-row halo, on the compute device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace eaglet::data {

struct ShardInput {
  at::Tensor hs;         // [C+T, 3·Ht]
  at::Tensor ids;        // int64 [C+T]
  at::Tensor lhs;        // [C+T, Ht]
  at::Tensor loss_mask;  // [C+T], 0/1
  at::Tensor positions;  // int64 [C·U]: positions of the Ulysses-gathered chunk
  // A packed sample (manifest `segments`, DESIGN §6; data/sharding.h pack_documents): the C own
  // rows are `runs` (summing to C), each followed by its own T-row halo (zeros past its
  // document's end), so the tensors above hold C + runs.size()·T rows; `segments` are the
  // documents' lengths over the Ulysses-gathered chunk (summing to C·U), inside which block-0
  // attention stays. Both empty: one document, one run.
  std::vector<int64_t> runs, segments;
};

}  // namespace eaglet::data
