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
// The rows move there and back by two point-to-point rounds inside block 0 (q, K/V packed, out,
// lse forward; dout, q, K/V, out, lse, dq and dK/dV packed backward); the data layout, positions
// and everything outside the attention keep the contiguous order of DESIGN §3.
#pragma once

#include <memory>

#include "attention/ttt_attention.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::attention {

std::shared_ptr<Block0> ring_block0(Communicator& ring, const LocalKernel& kernel,
                                    bool zigzag = true);

// The zigzag exchange along `dim` (exposed for tests): contiguous -> zigzag, and back.
at::Tensor to_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim);
at::Tensor from_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim);

}  // namespace eaglet::attention
