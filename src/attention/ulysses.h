// Ulysses all-to-all (DESIGN §5) as autograd functions over the Ulysses group: scatter heads and
// gather sequence, [C, n, d] -> [C·U, n/U, d] (rank u keeps heads [u·n/U, (u+1)·n/U), the gathered
// sequence is the peers' chunks in Ulysses-rank order), and its inverse. Each one's backward is the
// other, so every rank runs the same collectives in forward and backward. Works for query heads and
// KV heads alike (GQA groups stay whole because heads split in contiguous blocks). scatter_qkv does
// the three of the q|k|v projection in one collective.
#pragma once

#include <ATen/core/Tensor.h>

namespace eaglet {
class Communicator;
}

namespace eaglet::attention {

at::Tensor scatter_heads(const at::Tensor& x, Communicator& ulysses);
at::Tensor gather_heads(const at::Tensor& x, Communicator& ulysses);

struct Qkv {
  at::Tensor q, k, v;
};
// The q|k|v projection's output x [C, (nq + 2·nkv)·d] scattered by one all-to-all instead of
// three: q [C·U, nq/U, d], k and v [C·U, nkv/U, d], each as scatter_heads would give it (q and k
// strided views of the received buffer, v a contiguous copy: the K/V cache keeps it). Its backward
// is gather_qkv, again one all-to-all. Without a group or with U = 1: the three parts of x as views
// (v copied).
Qkv scatter_qkv(const at::Tensor& x, int64_t nq, int64_t nkv, int64_t d, Communicator* ulysses);
// The inverse of scatter_qkv on gradients (U > 1): dq, dk, dv ([C·U, heads/U, d]) -> dx
// [C, (nq + 2·nkv)·d] in x's head order.
at::Tensor gather_qkv(const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv,
                      Communicator& ulysses);

}  // namespace eaglet::attention
