// What the data layer hands the model for one micro-batch: one rank's shard of one sample
// (DESIGN §3), C own rows plus a T-row halo, on the compute device.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet::data {

struct ShardInput {
  at::Tensor hs;         // [C+T, 3·Ht]
  at::Tensor ids;        // int64 [C+T]
  at::Tensor lhs;        // [C+T, Ht]
  at::Tensor loss_mask;  // [C+T], 0/1
  at::Tensor positions;  // int64 [C·U]: positions of the Ulysses-gathered chunk
};

}  // namespace eaglet::data
