// The manifest (DESIGN §2): one JSON object per sample, one line each (JSONL), appended by a
// producer once all of the sample's objects are in the store. Owns the line format, the append
// writer, per-line validation against the run's config, and a reader that can follow a growing
// file.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/config.h"

namespace eaglet::data {

// dtype names used in the manifest's "dtypes" object and what they mean.
struct DtypeInfo {
  const char* name;  // "bfloat16", "float16", "float32", "int64", "int32"
  int64_t bytes;     // element size
  bool floating;
};
// The entry for `name`, or nullptr when eaglet does not know it.
const DtypeInfo* find_dtype(const std::string& name);

// One sample's line.
struct ManifestEntry {
  std::string key;               // base key; objects are {key}_usp{s}_hs|_ids|_lhs (or {key}_hs|..)
  int64_t seq_len = 0;           // S (before cutting to max_seq_length)
  int64_t hidden_size = 0;       // Ht
  int64_t num_aux = 3;           // aux layers in hs (= model.config.num_aux_hidden_states)
  std::string packed_loss_mask;  // run lengths, see sharding.h
  int64_t sp_size = 1;           // P the producer sharded for
  int64_t ttt_length = 0;        // T (halo length)
  int64_t max_seq_length = 0;    // cut applied by the producer
  std::string hs_dtype = "bfloat16", ids_dtype = "int64", lhs_dtype = "bfloat16";  // "dtypes"
  // Optional "aux_layer_ids": the target layers hs concatenates (num_aux of them); empty when the
  // line has none. Kept for export (SGLang's eagle_aux_hidden_state_layer_ids).
  std::vector<int64_t> aux_layer_ids;
  // Optional "usp_sharded" (TorchSpec's name), default true: objects {key}_usp{s}_* pre-sharded
  // for sp_size / ttt_length / max_seq_length. false: one full-length set {key}_hs|_ids|_lhs of
  // seq_len rows that every SP rank cuts itself, for any layout (sp_size, ttt_length and
  // max_seq_length are then optional and ignored: the entry carries this run's values).
  bool usp_sharded = true;
  // Optional "segments": a packed sample's document lengths (each >= 1, summing to seq_len;
  // DESIGN §6). Positions restart and block-0 attention stays inside each document; empty: one
  // document. Needs a run with parallel.ring = 1.
  std::vector<int64_t> segments;
};

// The line (without the newline), fields in the documented order:
// {"key","seq_len","hidden_size","num_aux","packed_loss_mask","sp_size","ttt_length",
//  "max_seq_length","dtypes":{"hs","ids","lhs"}}, then "aux_layer_ids" when set,
// "usp_sharded":false for an unsharded sample and "segments" for a packed one.
std::string manifest_line(const ManifestEntry& e);

// What this run requires of every line.
struct ManifestExpect {
  int64_t sp_size = 1;         // parallel.ulysses * parallel.ring
  int64_t ttt_length = 0;      // training.ttt_length
  int64_t max_seq_length = 0;  // data.max_seq_length
  int64_t hidden_size = 0;     // model.config.target_hidden_size; 0 accepts any
  int64_t num_aux = 3;         // model.config.num_aux_hidden_states; 0 accepts any
  int64_t ring = 1;            // parallel.ring: packed samples (segments) need 1
};
ManifestExpect manifest_expect(const Config& cfg);

// data.manifest, or <data.path>/manifest.jsonl when empty.
std::string manifest_path(const DataConfig& cfg);

// Parses and validates one line: JSON object, every field present with its type and range, the
// key legal, the packed mask valid and no longer than seq_len, dtypes known, and sp_size /
// ttt_length / max_seq_length / hidden_size equal to `expect`. Throws eaglet::Error
// "manifest <path>:<line>: <what>" (mismatches name both values and the config key).
ManifestEntry parse_manifest_line(const std::string& text, const ManifestExpect& expect,
                                  const std::string& path, int64_t line);

// Appends lines; each append is one write() of the whole line followed by fsync, so a reader
// never takes a half-written line for a sample (it only reads lines ending in '\n').
class ManifestWriter {
 public:
  explicit ManifestWriter(std::string path);  // creates the folder and the file when missing
  ~ManifestWriter();
  ManifestWriter(const ManifestWriter&) = delete;
  ManifestWriter& operator=(const ManifestWriter&) = delete;
  // Call only after every object of the sample is in the store.
  void append(const ManifestEntry& e);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// One line as the reader hands it out. A line that fails validation is kept (error set) so that
// sample positions never shift; the shard reader fails or neutralises it per data.on_error.
struct ManifestRecord {
  int64_t index = 0;  // position among the manifest's samples (0-based; blank lines skipped)
  int64_t line = 0;   // 1-based line number in the file
  ManifestEntry entry;
  std::string error;  // non-empty: the validation error ("manifest <path>:<line>: ...")
  bool ok() const { return error.empty(); }
};

// Reads complete lines of a manifest, now and as a producer appends more. Thread-safe: poll() and
// wait_for() may run on a prefetch thread while another thread calls size() / at().
class ManifestReader {
 public:
  ManifestReader(std::string path, ManifestExpect expect);

  // Reads the lines completed since the last call; returns how many records were added. A file
  // that does not exist (yet) adds none. Throws eaglet::Error naming the file on I/O errors.
  int64_t poll();
  // Polls until at least `n` records exist, `stop()` returns true, or `timeout` passes (then throws
  // eaglet::Error naming the file, the count seen and the wait). Returns size().
  int64_t wait_for(int64_t n, std::chrono::milliseconds timeout,
                   const std::function<bool()>& stop = {},
                   std::chrono::milliseconds interval = std::chrono::milliseconds(50));
  // Throws naming the file when it does not exist (a fixed manifest must be there at start-up).
  void require_exists() const;

  int64_t size() const;
  // Records are never moved: the reference stays valid for the reader's lifetime.
  const ManifestRecord& at(int64_t index) const;
  // The first invalid record's error, or "" (data.on_error=fail can refuse a manifest up front).
  std::string first_error() const;
  int64_t invalid_count() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  ManifestExpect expect_;
  mutable std::mutex mutex_;
  std::deque<ManifestRecord> records_;
  std::map<std::string, int64_t> keys_;  // key -> line, to refuse duplicates
  int64_t offset_ = 0;                   // bytes consumed (complete lines only)
  int64_t lines_ = 0;                    // lines consumed
  int64_t invalid_ = 0;
};

}  // namespace eaglet::data
