// Ulysses all-to-all (DESIGN §5) as autograd functions over the Ulysses group: scatter heads and
// gather sequence, [C, n, d] -> [C·U, n/U, d] (rank u keeps heads [u·n/U, (u+1)·n/U), the gathered
// sequence is the peers' chunks in Ulysses-rank order), and its inverse. Each one's backward is the
// other, so every rank runs the same collectives in forward and backward. Works for query heads and
// KV heads alike (GQA groups stay whole because heads split in contiguous blocks).
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet {
class Communicator;
}

namespace eaglet::attention {

at::Tensor scatter_heads(const at::Tensor& x, Communicator& ulysses);
at::Tensor gather_heads(const at::Tensor& x, Communicator& ulysses);

}  // namespace eaglet::attention
