// Reading one sample on one rank (DESIGN §3): fetch only this rank's objects
// `{key}_usp{s}_hs|_ids|_lhs` with sizes checked against the manifest, rebuild loss mask,
// attention mask and positions, and decide fail / neutralise identically on every SP rank.
//
// Two parts, so that storage can run ahead of training:
//  - fetch_shard / place_shard: store reads, local rebuild, copy to the device. No communication;
//    safe on a background thread (the prefetcher's).
//  - ShardReader::finish: the decision. Collective over the SP group's communicator: every SP rank
//    calls it for the same sample, in the same order, on the main thread. One all-reduce (sum) of
//    a small int64 vector carries every rank's error (kind, object, expected and actual bytes) and
//    its loss-token count, so every SP rank builds the same message and takes the same decision:
//    with data.on_error=fail every SP rank throws the same eaglet::Error (naming key, rank and
//    sizes, or the row holding a NaN / Inf: hidden states are scanned for non-finite values on
//    the host, in the background part); with skip, or when the sample has no loss token at all,
//    every SP rank neutralises it (zero tensors, zero loss mask, same shapes) and counts it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "data/batch.h"
#include "data/manifest.h"
#include "data/sharding.h"
#include "data/store.h"
#include "dist/topology.h"

namespace eaglet {
class Communicator;
}

namespace eaglet::data {

struct ReaderOptions {
  int64_t sp_rank = 0, sp_size = 1;  // s, P
  int64_t ulysses = 1;               // U
  int64_t ring_rank = 0;             // g
  int64_t ttt_length = 0;            // T
  int64_t max_seq_length = 0;
  int64_t hidden_size = 0;   // Ht: width of the stand-in shard of an invalid manifest line
  int64_t num_aux = 3;       // aux layers of that stand-in (model.config.num_aux_hidden_states)
  bool skip_errors = false;  // data.on_error=skip
  bool consume = false;      // data.consume: remove this rank's objects after reading them
  c10::Device device{c10::kCPU};
  at::ScalarType hidden_dtype = at::kBFloat16;  // dtype hs / lhs are handed to the model in
  bool pin_memory = false;                      // read into pinned host memory (CUDA runs)
  std::string manifest_path;                    // for messages
};
// The options of this rank from the run's config and coordinates.
ReaderOptions reader_options(const Config& cfg, const Layout& layout, const RankCoord& coord,
                             c10::Device device, at::ScalarType hidden_dtype);

// What went wrong with this rank's shard (kind values travel in the all-reduce).
enum class ProblemKind : int64_t {
  none = 0,
  manifest = 1,
  missing = 2,
  size = 3,
  io = 4,
  nonfinite = 5,
};
constexpr int64_t kProblemKinds = 6;
// For summaries: "invalid manifest line", "missing object", ...
const char* problem_text(ProblemKind kind);
struct ShardProblem {
  ProblemKind kind = ProblemKind::none;
  int64_t object = -1;   // index into kShardObjects
  int64_t expected = 0;  // bytes
  int64_t actual = -1;   // bytes (-1: unknown); nonfinite: the first bad row of the shard
  std::string message;   // local detail (I/O errors, the manifest line's error)
};

// The first row of a host float tensor (bf16, fp16 or fp32; rows along dim 0) holding a NaN or
// an infinity, or -1. Reads the bits (an all-ones exponent), at memory speed.
int64_t first_nonfinite_row(const at::Tensor& t);

// One object of a shard as the manifest and the layout say it must be, and what this rank reads
// of it. Pre-sharded (usp_sharded): {key}_usp{s}_* of local_len rows, read whole. Unsharded:
// {key}_* of seq_len rows, of which this rank reads rows [first_row, first_row + rows) (the
// rows its pre-sharded shard would hold) into the start of a zeroed [local_len, ...] buffer, so
// the result is bit for bit the pre-sharded shard.
struct ObjectSpec {
  std::string key;
  std::string dtype;  // manifest name, e.g. "bfloat16"
  at::ScalarType scalar_type;
  std::vector<int64_t> shape;  // stored: [local_len, num_aux·Ht], [local_len], [local_len, Ht]
  int64_t bytes = 0;           // of the whole stored object
  bool ranged = false;         // unsharded: read a byte range
  int64_t first_row = 0, rows = 0, row_bytes = 0;
  std::vector<int64_t> buffer_shape;  // [local_len, ...]: what this rank gets
};
std::array<ObjectSpec, 3> shard_objects(const ManifestEntry& e, const ShardGeometry& g,
                                        int64_t sp_rank);

// This rank's shard of one sample before the SP-wide decision.
struct FetchedShard {
  int64_t position = -1;  // stream position (-1 when read outside a stream)
  ManifestRecord record;
  ShardGeometry geometry;   // of the record; a 1-row-per-rank stand-in when the line is invalid
  at::Tensor hs, ids, lhs;  // stored dtypes on the host after fetch_shard; undefined on a problem
  at::Tensor loss_mask, attention_mask, positions;
  std::vector<int64_t> runs, segments;  // a packed sample's layout (ShardInput, pack_documents)
  int64_t local_loss_tokens = 0;  // in the rows this rank owns
  ShardProblem problem;
  // Set by the prefetcher on CUDA: makes the caller's current stream wait for the copies.
  std::function<void()> ready;
};

// This rank's token ids of one sample alone (the `_ids` object in the manifest's dtype, int32 or
// int64), as int64 [local_len]; never consumes. Throws naming `what`, the key and both sizes.
at::Tensor read_shard_ids(Store& store, const ManifestEntry& e, const ShardGeometry& g,
                          int64_t sp_rank, const std::string& what);

// Reads this rank's objects (batch get into fresh, optionally pinned, host tensors; byte ranges
// of the full objects for an unsharded sample), checks their sizes, rebuilds the masks and
// positions, and removes the objects when data.consume is set (an unsharded sample's objects,
// shared by the SP group, are removed by SP rank 0 in ShardReader::finish, once all have read).
// Store failures become the shard's problem, never an exception.
FetchedShard fetch_shard(Store& store, const ManifestRecord& record, const ReaderOptions& opt,
                         int64_t position = -1);
// Moves the tensors to opt.device (non-blocking from pinned memory, on the current stream) and
// converts hs / lhs to opt.hidden_dtype, ids to int64.
void place_shard(FetchedShard& f, const ReaderOptions& opt);

// A sample ready for the model.
struct ShardSample {
  ShardInput input;
  at::Tensor attention_mask;  // int64 [local_len]: 1 real row, 0 tail padding (rows as stored)
  std::vector<int64_t> documents;  // the manifest's segments; empty: one document
  ShardGeometry geometry;
  int64_t position = -1;
  std::string key;
  bool neutralised = false;  // zero loss mask: contributes nothing, but runs every collective
  std::string reason;        // why it was neutralised
  int64_t global_loss_tokens = 0;
};

class ShardReader {
 public:
  // `sp` is the SP group's host communicator (rank s of P: ProcessGroups::host_group, which
  // works on CPU tensors), so that agreeing on a sample's problems never waits for the device;
  // it must outlive the reader.
  ShardReader(Store& store, Communicator& sp, ReaderOptions opt);

  const ReaderOptions& options() const { return opt_; }
  Store& store() const { return store_; }
  // fetch_shard with this reader's store and options (background-safe).
  FetchedShard fetch(const ManifestRecord& record, int64_t position = -1) const {
    return fetch_shard(store_, record, opt_, position);
  }
  // The collective decision (see the file comment). Throws eaglet::Error on every SP rank for a
  // problem under data.on_error=fail.
  ShardSample finish(FetchedShard f);
  // fetch + place + finish on the calling thread.
  ShardSample read(const ManifestRecord& record, int64_t position = -1);

  int64_t skipped_errors() const { return skipped_errors_; }  // neutralised for a problem
  int64_t empty_samples() const { return empty_samples_; }    // neutralised: no loss token
  int64_t neutralised() const { return skipped_errors_ + empty_samples_; }
  // Neutralised for a problem, by the kind of the lowest SP rank's problem (index: ProblemKind).
  const std::array<int64_t, kProblemKinds>& skipped_by_kind() const { return skipped_by_kind_; }

 private:
  std::string describe(const FetchedShard& f, int64_t rank, ProblemKind kind, int64_t object,
                       int64_t expected, int64_t actual) const;
  Store& store_;
  Communicator& sp_;
  ReaderOptions opt_;
  int64_t skipped_errors_ = 0, empty_samples_ = 0;
  std::array<int64_t, kProblemKinds> skipped_by_kind_{};
};

}  // namespace eaglet::data
