// Ring attention for TTT block 0 over the ring group (DESIGN §5). Rank g holds the queries of ring
// chunk g; at ring step t it holds the KV block of ring rank (g − t) mod R, uses it causally at
// t = 0, fully for 0 < t <= g, and skips it otherwise; blocks merge by log-sum-exp in fp32.
// Every rank performs every rotation whatever it skips, so the collectives stay in step. The next
// block's send/recv is started before the current block's compute (overlap on GPU). Backward
// recomputes block by block with the merged out and lse and rotates dK/dV with K/V so that each
// block's gradient returns to its owner after R hops.
#pragma once

#include <memory>

#include "attention/ttt_attention.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::attention {

std::shared_ptr<Block0> ring_block0(Communicator& ring, const LocalKernel& kernel);

}  // namespace eaglet::attention
