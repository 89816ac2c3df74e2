// Ring attention for TTT block 0 over the ring group (DESIGN §5). At ring step t rank g holds the
// KV block of ring rank h = (g − t) mod R; blocks merge by log-sum-exp in fp32. Every rank performs
// every rotation whatever it skips, so the collectives stay in step. The next block's send/recv is
// started before the current block's compute (overlap on GPU). Backward recomputes block by block
// with the merged out and lse and rotates dK/dV with K/V so that each block's gradient returns to
// its owner after R hops.
//
// Load balancing. With the plain layout rank g holds ring chunk g and attends to chunks h <= g:
// rank R−1 does R times the work of rank 0. With zigzag the sequence of the ring is cut into 2R
// half-chunks and, for the attention only, rank g holds half-chunks g and 2R−1−g (one early, one
// late): at t = 0 it attends causally to its own pair, for h < g all its queries see the early
// half of h's pair, for h > g its late half sees all of h's pair, i.e. every step costs the same.
// Two ways to get there:
// - zigzag_layout (U even or U = 1): the rows arrive in the zigzag layout. Each rank reads its own
//   shard (DESIGN §3), then, once per sample and before the model, the rows move to the rank that
//   trains them, each run with its T-row halo, together with their positions (to_zigzag_layout).
//   With U even a half-chunk is U/2 whole shards, so whole shards change places; with U = 1 each
//   shard's two halves go to their zigzag owners and a rank trains two runs of rows. Block 0 then
//   exchanges nothing.
// - zigzag_exchange (any U): the rows move there and back by two point-to-point rounds inside
//   block 0 (q, K/V packed, out, lse forward; dout, q, K/V, out, lse, dq and dK/dV packed
//   backward) at every TTT step; everything outside the attention keeps the order of DESIGN §3.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "attention/ttt_attention.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::attention {

enum class RingBalance { none, zigzag_exchange, zigzag_layout };

// parallel.ring_balance: "zigzag" (zigzag_layout where U is even or 1, else zigzag_exchange),
// "zigzag_exchange" or "none".
RingBalance ring_balance(const std::string& name, int64_t U);

std::shared_ptr<Block0> ring_block0(Communicator& ring, const LocalKernel& kernel,
                                    RingBalance balance);

// Under zigzag_layout with U even (R ring ranks): the shard SP rank (g, u) trains. The first U/2
// Ulysses ranks hold half-chunk g, the others half-chunk 2R−1−g.
int64_t zigzag_shard(int64_t g, int64_t u, int64_t R, int64_t U);

// What a rank trains under zigzag_layout: runs of rows, each followed by its T-row halo.
struct ZigzagRows {
  std::vector<at::Tensor> tensors;  // the shard's tensors, rows along dim 0: Σ (runs[i] + T)
  std::vector<int64_t> runs;        // own rows of each run (one run for U even, two for U = 1)
  at::Tensor positions;             // [Σ runs · U]: the Ulysses-gathered chunk's positions
};
// Moves this rank's shard (tensors of C + T rows: C own rows and the halo, DESIGN §3) to the
// zigzag layout. `sp`: the SP group, whose rank s is (g = s / U, u = s % U). Collective over it.
ZigzagRows to_zigzag_layout(Communicator& sp, int64_t U, int64_t T,
                            const std::vector<at::Tensor>& shard,
                            const at::TensorOptions& position_options);

// The zigzag exchange along `dim` (exposed for tests): contiguous -> zigzag, and back.
at::Tensor to_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim);
at::Tensor from_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim);

}  // namespace eaglet::attention
