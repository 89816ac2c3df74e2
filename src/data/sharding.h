// The pre-sharded sample layout of DESIGN §2-3, used by producers and readers alike: C = ceil(L/P),
// local_len = C + T, the rows each shard holds, object keys, the packed loss mask, and what each
// rank rebuilds (loss mask, attention mask, ring-chunk positions). Pure arithmetic plus CPU
// tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch.h"

namespace eaglet::data {

// The three objects of one shard, in fetch order: `{key}_usp{s}_hs|_ids|_lhs`.
enum class ShardObject { hs, ids, lhs };
inline constexpr ShardObject kShardObjects[] = {ShardObject::hs, ShardObject::ids,
                                                ShardObject::lhs};
const char* object_suffix(ShardObject obj);  // "hs", "ids", "lhs"
// "{key}_usp{sp_rank}_{suffix}"
std::string object_key(const std::string& key, int64_t sp_rank, ShardObject obj);

// "{key}_{suffix}": the one full-length object of an unsharded sample (manifest usp_sharded=false).
std::string full_object_key(const std::string& key, ShardObject obj);

int64_t ceil_div(int64_t a, int64_t b);

// Rows [begin, end) of the sample; empty (end == begin) for a shard that is all tail padding.
struct RowRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// How one sample is cut for a run with P SP ranks and TTT length T.
struct ShardGeometry {
  int64_t seq_len = 0;     // S, the sample's token count
  int64_t length = 0;      // L = min(S, max_seq_length)
  int64_t sp_size = 1;     // P
  int64_t ttt_length = 0;  // T
  int64_t chunk = 0;       // C = ceil(L / P): own rows per shard
  int64_t local_len = 0;   // C + T: rows per shard (own + halo), zero-padded at the global tail
  // [s·C, min(s·C + local_len, L)): the real rows shard s holds (its own C and the halo).
  RowRange rows(int64_t sp_rank) const;
  // [s·C, min(s·C + C, L)): the rows shard s owns (no halo); these partition [0, L).
  RowRange own_rows(int64_t sp_rank) const;
};

// The one place C and local_len are computed. Throws eaglet::Error unless S >= 1,
// max_seq_length >= 1, P >= 1, T >= 0.
ShardGeometry shard_geometry(int64_t seq_len, int64_t max_seq_length, int64_t sp_size,
                             int64_t ttt_length);

// --- packed loss mask: comma-separated run lengths, alternating 0-runs and 1-runs, starting with
// a 0-run that may be 0 ("2,3,2,2,1" = 0011100110). Only the first run may be 0.
struct PackedMaskInfo {
  int64_t length = 0;  // total of all runs
  int64_t ones = 0;    // loss tokens
};
// Validates `packed`; throws eaglet::Error quoting it and naming the bad run.
PackedMaskInfo check_packed_loss_mask(const std::string& packed);
std::vector<uint8_t> unpack_loss_mask(const std::string& packed);
std::string pack_loss_mask(const std::vector<uint8_t>& mask);  // nonzero = 1
std::string pack_loss_mask(const at::Tensor& mask);            // 1-D, any dtype, nonzero = 1

// --- per-rank rebuild (DESIGN §3); CPU tensors
// loss_mask float32 [local_len]: the mask cut or zero-padded to L, rows [s·C, s·C + local_len),
// zero-padded (the halo included).
at::Tensor shard_loss_mask(const std::vector<uint8_t>& mask, const ShardGeometry& g,
                           int64_t sp_rank);
// Loss tokens in the rows shard s owns; summed over the P shards this is the sample's total in
// [0, L).
int64_t own_loss_tokens(const std::vector<uint8_t>& mask, const ShardGeometry& g, int64_t sp_rank);
// attention_mask int64 [local_len]: 1 for the real rows, 0 for the tail padding.
at::Tensor shard_attention_mask(const ShardGeometry& g, int64_t sp_rank);
// position_ids int64 [C·U] = g·C·U + arange(C·U): the Ulysses-gathered ring chunk of ring rank g.
at::Tensor ring_chunk_positions(const ShardGeometry& geom, int64_t ulysses, int64_t ring_rank);

// --- packed samples (manifest `segments`, DESIGN §6): several documents in one stored sample.
// Checks document lengths against the sample: each >= 1, summing to seq_len; throws naming them.
void check_segments(const std::vector<int64_t>& documents, int64_t seq_len);
// What SP rank s of P rebuilds for a packed sample when the Ulysses-gathered chunk is the whole
// sequence (parallel.ring = 1, U = P): `in` holds the shard as read (hs, ids, lhs, loss_mask of
// local_len rows); it leaves in the run layout of ShardInput: the own rows cut at every document
// end inside them, each piece followed by its T-row halo zeroed from its document's end on (what
// the document alone would see past its end), positions restarting at 0 in every document, and
// `segments` = the documents (cut to L) over the chunk's P·C rows, the tail padding joining the
// last. `documents` sum to seq_len (check_segments). One document gives the unpacked layout.
void pack_documents(ShardInput& in, const std::vector<int64_t>& documents, const ShardGeometry& g,
                    int64_t sp_rank);

// --- producers: a full sample and its P shards
struct FullSample {
  at::Tensor hs;         // [S, num_aux·Ht] (3 aux layers by default)
  at::Tensor ids;        // int64 [S]
  at::Tensor lhs;        // [S, Ht]
  at::Tensor loss_mask;  // [S], 0/1 (any dtype)
};
struct ShardTensors {
  at::Tensor hs, ids, lhs;  // [local_len, ...], same dtypes as the sample, zero-padded
};
// Checks shapes (S rows everywhere, hs width a multiple num_aux >= 1 of the lhs width); throws naming `what` and the shapes.
void check_full_sample(const FullSample& s, const std::string& what);
// Rows [s·C, s·C + local_len) of the sample (cut to L), zero-padded to local_len.
ShardTensors slice_shard(const FullSample& s, const ShardGeometry& g, int64_t sp_rank);
// The same, one row at a time (the plain reference the tests and `eaglet data check` compare to).
ShardTensors reference_shard(const FullSample& s, const ShardGeometry& g, int64_t sp_rank);

}  // namespace eaglet::data
