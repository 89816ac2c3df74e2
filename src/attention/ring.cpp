// Ring block 0: forward with overlapped KV rotation and fp32 LSE merge; backward with dK/dV
// rotation; zigzag load balancing, by the per-step exchange or the rows moved once per sample
// into the zigzag layout (attention/ring.h).
#include "attention/ring.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/logaddexp.h>

#include <optional>

#include "core/error.h"
#include "dist/communicator.h"

namespace eaglet::attention {
namespace {

// K and V travel as one buffer: [2, B, Hkv, L, d].
at::Tensor pack(const at::Tensor& k, const at::Tensor& v) {
  auto kc = k.contiguous(), vc = v.contiguous();
  return at::cat({kc.unsqueeze(0), vc.unsqueeze(0)}, 0);
}

// The ring's sequence (R ranks × L rows) cut into 2R half-chunks: half 2g holds the first
// ceil(L/2) rows of rank g's chunk, half 2g+1 the other floor(L/2).
struct Halves {
  int64_t R, g, L;
  int64_t size(int64_t h) const { return h % 2 == 0 ? (L + 1) / 2 : L / 2; }
  // Zigzag: rank g holds halves g (slot 0) then 2R−1−g (slot 1), in position order.
  int64_t owner(int64_t h) const { return h < R ? h : 2 * R - 1 - h; }
  int64_t zig_offset(int64_t h) const { return h < R ? 0 : size(2 * R - 1 - h); }
  int64_t plain_offset(int64_t h) const { return h % 2 == 0 ? 0 : size(h - 1); }
  // Of rank g's zigzag pair, the half with parity p.
  int64_t wanted(int64_t p) const { return g % 2 == p ? g : 2 * R - 1 - g; }
  int64_t early() const { return size(g); }  // rows of slot 0 in rank g's zigzag layout
};

// Two rounds (even halves, then odd ones), each a permutation of the ring ranks, so every
// send has its matching receive in the same round. With a halo (to_zig only: the zigzag layout
// of a shard, attention/ring.h) x holds `halo` rows after its own, each half travels with the
// `halo` rows after it, and the result holds half g, its halo, half 2R−1−g, its halo.
at::Tensor exchange(Communicator& ring, const at::Tensor& x, int64_t dim, bool to_zig,
                    int64_t halo = 0) {
  EAGLET_CHECK(to_zig || halo == 0, "the zigzag exchange back has no halo");
  const Halves hv{ring.size(), ring.rank(), x.size(dim) - halo};
  auto sizes = x.sizes().vec();
  sizes[dim] = hv.L + 2 * halo;
  auto out = at::empty(sizes, x.options());
  auto zig_offset = [&](int64_t h) { return hv.zig_offset(h) + (h < hv.R ? 0 : halo); };
  struct Pending {
    std::unique_ptr<Work> work;
    at::Tensor recv, into;
  };
  std::vector<Pending> pending;
  for (int64_t p = 0; p < 2; ++p) {
    const int64_t mine = 2 * hv.g + p, want = hv.wanted(p);
    // to_zig: send plain half `mine`, receive zigzag half `want`; from_zig: the reverse.
    const int64_t send_h = to_zig ? mine : want, recv_h = to_zig ? want : mine;
    const int64_t dst = to_zig ? hv.owner(mine) : want / 2;
    const int64_t src = to_zig ? want / 2 : hv.owner(mine);
    const int64_t send_off = to_zig ? hv.plain_offset(send_h) : zig_offset(send_h);
    const int64_t recv_off = to_zig ? zig_offset(recv_h) : hv.plain_offset(recv_h);
    auto from = x.narrow(dim, send_off, hv.size(send_h) + halo);
    auto into = out.narrow(dim, recv_off, hv.size(recv_h) + halo);
    if (dst == hv.g) {  // then src == g too: the half stays
      into.copy_(from);
      continue;
    }
    auto send = from.contiguous(), recv = at::empty_like(into, at::MemoryFormat::Contiguous);
    pending.push_back({ring.send_recv(send, dst, recv, src), recv, into});
  }
  for (auto& p : pending) {
    p.work->wait();
    p.into.copy_(p.recv);
  }
  return out;
}

// out[rows] and lse[rows] (fp32 accumulators) merged with one block's result, in place. The
// first block to reach the rows is copied: merging it into (0, −inf) gives the same numbers.
void merge_into(at::Tensor out, at::Tensor lse, const AttnResult& r, bool first) {
  if (first) {
    out.copy_(r.out);
    lse.copy_(r.lse);
    return;
  }
  auto block_lse = r.lse.to(lse.scalar_type());
  auto merged = at::logaddexp(lse, block_lse);
  out.mul_(at::exp(lse - merged).unsqueeze(-1));
  out.addcmul_(r.out, at::exp(block_lse - merged).unsqueeze(-1));
  lse.copy_(merged);
}

class RingBlock0 final : public Block0 {
 public:
  RingBlock0(Communicator& ring, const LocalKernel& kernel, RingBalance balance)
      : ring_(ring),
        kernel_(kernel),
        zigzag_(balance != RingBalance::none),
        exchange_(balance == RingBalance::zigzag_exchange) {}

  AttnResult forward(const at::Tensor& q_in, const at::Tensor& k, const at::Tensor& v,
                     double scale) override {
    const int64_t R = ring_.size(), g = ring_.rank(), next = (g + 1) % R, prev = (g + R - 1) % R;
    auto q = zig(q_in);
    const int64_t early = Halves{R, g, q.size(2)}.early();
    auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    // Step 0's causal block covers every row, so it initialises both accumulators.
    auto out = at::empty(q.sizes(), q.options().dtype(acc_type));
    auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(acc_type));
    AttnResult result;
    auto kv = zig(pack(k, v), 3);
    for (int64_t t = 0; t < R; ++t) {
      at::Tensor incoming;
      std::unique_ptr<Work> transfer;
      if (t + 1 < R) {  // start the next block's transfer before computing on this one
        incoming = at::empty_like(kv);
        transfer = ring_.send_recv(kv, next, incoming, prev);
      }
      const int64_t h = (g - t + R) % R;
      KernelState state;
      if (auto b = block(t, h, g, early, q.size(2), kv.size(3))) {
        auto r = attend(kernel_, q.narrow(2, b->q0, b->qn), kv[0].narrow(2, b->k0, b->kn),
                        kv[1].narrow(2, b->k0, b->kn), /*causal=*/t == 0, scale);
        merge_into(out.narrow(2, b->q0, b->qn), lse.narrow(2, b->q0, b->qn), r, t == 0);
        state = std::move(r.state);
      }
      result.state.parts.push_back(std::move(state));
      if (transfer) {
        transfer->wait();
        kv = incoming;
      }
    }
    result.out = unzig(out.to(q.scalar_type()));
    result.lse = unzig(lse);
    return result;
  }

  std::vector<at::Tensor> backward(const at::Tensor& dout_in, const at::Tensor& q_in,
                                   const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& out_in, const at::Tensor& lse_in,
                                   const KernelState& state, double scale) override {
    const int64_t R = ring_.size(), g = ring_.rank(), next = (g + 1) % R, prev = (g + R - 1) % R;
    auto q = zig(q_in), dout = zig(dout_in), out = zig(out_in), lse = zig(lse_in);
    const int64_t early = Halves{R, g, q.size(2)}.early();
    auto acc_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    auto dq = at::empty(q.sizes(), q.options().dtype(acc_type));  // step 0 covers every row
    auto kv = zig(pack(k, v), 3);
    // The gradient of the block held at step t travels with the block: it arrives from prev
    // (sent there at the end of step t − 1) while step t's block is computed, takes step t's
    // contribution, and goes on to next; after R hops it is back with its owner.
    at::Tensor dkv, dkv_in;
    std::unique_ptr<Work> dkv_transfer;
    for (int64_t t = 0; t < R; ++t) {
      at::Tensor incoming;
      std::unique_ptr<Work> transfer;
      if (t + 1 < R) {
        incoming = at::empty_like(kv);
        transfer = ring_.send_recv(kv, next, incoming, prev);
      }
      const int64_t h = (g - t + R) % R;
      auto b = block(t, h, g, early, q.size(2), kv.size(3));
      std::vector<at::Tensor> grads;
      if (b) {
        auto rows = [&](const at::Tensor& x) { return x.narrow(2, b->q0, b->qn); };
        grads = attend_backward(kernel_, rows(dout), rows(q), kv[0].narrow(2, b->k0, b->kn),
                                kv[1].narrow(2, b->k0, b->kn), rows(out), rows(lse), state.parts[t],
                                /*causal=*/t == 0, scale);
        if (t == 0)
          rows(dq).copy_(grads[0]);
        else
          rows(dq).add_(grads[0]);
      }
      if (t == 0) {  // the own block, causal over all its rows: it starts the gradient
        dkv = at::empty(kv.sizes(), kv.options().dtype(acc_type));
        dkv[0].copy_(grads[1]);
        dkv[1].copy_(grads[2]);
      } else {
        dkv_transfer->wait();
        dkv = dkv_in;
        if (b) {
          dkv[0].narrow(2, b->k0, b->kn).add_(grads[1]);
          dkv[1].narrow(2, b->k0, b->kn).add_(grads[2]);
        }
      }
      // After the last block the gradient is complete: it goes home, and through the zigzag
      // exchange, in the compute dtype (a cast before or after a copy gives the same numbers).
      auto send = t + 1 == R ? dkv.to(k.scalar_type()) : dkv;
      dkv_in = at::empty_like(send);
      dkv_transfer = ring_.send_recv(send, next, dkv_in, prev);
      if (transfer) {
        transfer->wait();
        kv = incoming;
      }
    }
    dkv_transfer->wait();
    auto dkv_plain = unzig(dkv_in, 3);  // K and V share the compute dtype (packed together)
    return {unzig(dq.to(q.scalar_type())), dkv_plain[0], dkv_plain[1]};
  }

 private:
  // Which query rows [q0, q0+qn) see which key rows [k0, k0+kn) of the block of ring rank h held
  // at step t; none when the block is entirely in the future.
  struct Rows {
    int64_t q0, qn, k0, kn;
  };
  std::optional<Rows> block(int64_t t, int64_t h, int64_t g, int64_t early, int64_t lq,
                            int64_t lk) const {
    if (t == 0) return Rows{0, lq, 0, lk};  // own rows, causal in local (= position) order
    if (!zigzag_) {
      if (h < g) return Rows{0, lq, 0, lk};
      return std::nullopt;
    }
    const int64_t h_early = Halves{ring_.size(), h, lk}.early();
    const auto rows = h < g ? Rows{0, lq, 0, h_early}          // every query after h's early half
                            : Rows{early, lq - early, 0, lk};  // g's late half after all of h
    if (rows.qn == 0 || rows.kn == 0) return std::nullopt;     // a 1-row chunk has an empty half
    return rows;
  }
  // Along the sequence: dim 2 of [1, H, L, d] and [1, H, L]; dim 3 of packed K/V.
  at::Tensor zig(const at::Tensor& x, int64_t dim = 2) {
    return exchange_ ? exchange(ring_, x, dim, true) : x;
  }
  at::Tensor unzig(const at::Tensor& x, int64_t dim = 2) {
    return exchange_ ? exchange(ring_, x, dim, false) : x;
  }

  Communicator& ring_;
  const LocalKernel& kernel_;
  bool zigzag_;    // the rows are (or are moved to) the zigzag layout
  bool exchange_;  // block 0 moves them there and back
};

}  // namespace

RingBalance ring_balance(const std::string& name, int64_t U) {
  if (name == "none") return RingBalance::none;
  if (name == "zigzag_exchange") return RingBalance::zigzag_exchange;
  EAGLET_CHECK(name == "zigzag",
               "parallel.ring_balance={}: expected zigzag, zigzag_exchange or none", name);
  return U % 2 == 0 || U == 1 ? RingBalance::zigzag_layout : RingBalance::zigzag_exchange;
}

std::shared_ptr<Block0> ring_block0(Communicator& ring, const LocalKernel& kernel,
                                    RingBalance balance) {
  if (ring.size() == 1) return local_block0(kernel);
  return std::make_shared<RingBlock0>(ring, kernel, balance);
}

int64_t zigzag_shard(int64_t g, int64_t u, int64_t R, int64_t U) {
  EAGLET_CHECK(U % 2 == 0 && 0 <= g && g < R && 0 <= u && u < U,
               "zigzag by whole shards needs an even Ulysses size (U = {}, g = {}, u = {}, R = {})",
               U, g, u, R);
  const int64_t half = U / 2;
  return u < half ? g * half + u : (2 * R - 1 - g) * half + (u - half);
}

namespace {

// U even: whole shards change places (one send/recv pair per tensor where a shard moves).
ZigzagRows move_shards(Communicator& sp, int64_t U, int64_t T, const std::vector<at::Tensor>& shard,
                       const at::TensorOptions& position_options) {
  const int64_t P = sp.size(), s = sp.rank(), R = P / U, g = s / U;
  const int64_t C = shard.at(0).size(0) - T;
  auto trains = [&](int64_t rank) { return zigzag_shard(rank / U, rank % U, R, U); };
  const int64_t src = trains(s);  // the shard trained here was read by rank src
  int64_t dst = s;                // the rank that trains the shard read here
  for (int64_t r = 0; r < P; ++r)
    if (trains(r) == s) dst = r;
  ZigzagRows z;
  z.runs = {C};
  std::vector<at::Tensor> parts;
  for (int64_t u = 0; u < U; ++u) {
    const int64_t first = zigzag_shard(g, u, R, U) * C;
    parts.push_back(at::arange(first, first + C, position_options));
  }
  z.positions = at::cat(parts);
  if (src == s) {  // then dst == s too
    z.tensors = shard;
    return z;
  }
  std::vector<std::unique_ptr<Work>> work;
  for (const auto& t : shard) {
    auto send = t.contiguous();
    z.tensors.push_back(at::empty_like(send));
    work.push_back(sp.send_recv(send, dst, z.tensors.back(), src));
  }
  for (auto& w : work) w->wait();
  return z;
}

// U = 1: the shard's two halves, each with the T rows after it, go to their zigzag owners; a rank
// ends with half g then half 2R−1−g (the zigzag exchange with a halo).
ZigzagRows move_halves(Communicator& ring, int64_t T, const std::vector<at::Tensor>& shard,
                       const at::TensorOptions& position_options) {
  const int64_t R = ring.size(), g = ring.rank(), C = shard.at(0).size(0) - T;
  const Halves hv{R, g, C};
  const int64_t slot[2] = {g, 2 * R - 1 - g};  // the halves trained here, in layout order
  ZigzagRows z;
  z.runs = {hv.size(slot[0]), hv.size(slot[1])};
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < 2; ++i) {
    const int64_t first = (slot[i] / 2) * C + hv.plain_offset(slot[i]);
    parts.push_back(at::arange(first, first + z.runs[i], position_options));
  }
  z.positions = at::cat(parts);
  for (const auto& t : shard) z.tensors.push_back(exchange(ring, t, 0, true, T));
  return z;
}

}  // namespace

ZigzagRows to_zigzag_layout(Communicator& sp, int64_t U, int64_t T,
                            const std::vector<at::Tensor>& shard,
                            const at::TensorOptions& position_options) {
  EAGLET_CHECK(!shard.empty() && shard[0].size(0) > T, "zigzag layout: a shard of {} rows, T = {}",
               shard.empty() ? 0 : shard[0].size(0), T);
  EAGLET_CHECK(sp.size() % U == 0, "SP group of {} ranks is not U = {} x R", sp.size(), U);
  if (U == 1) return move_halves(sp, T, shard, position_options);
  return move_shards(sp, U, T, shard, position_options);
}

at::Tensor to_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim) {
  return exchange(ring, x, dim, true);
}
at::Tensor from_zigzag(Communicator& ring, const at::Tensor& x, int64_t dim) {
  return exchange(ring, x, dim, false);
}

}  // namespace eaglet::attention
