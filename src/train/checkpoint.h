// Checkpoints (DESIGN §6): saving so that a crash never costs the previous checkpoint, verifying
// them on resume, and loading them into a compatible model.
//
// Format, <output_dir>/checkpoints/step_<8 digits>/:
//   model.safetensors      fp32 weights with SGLang names, d2t, t2d
//   config.json            the draft's HF config
//   optimizer.safetensors  AdamW moments and step counts
//   trainer_state.json     written last: the trainer's keys (step, cursor, skipped_steps, sp_size,
//                          epoch, total_steps, seed, topology, effective config) and, added here,
//                          "format_version": 1 and "files": {"<name>": {"bytes": N, "checksum":
//                          "<16 hex digits>"}} for the three files above. The checksum is XXH64
//                          (seed 0) of the file's bytes (io/checksum.h): `xxhsum -H1` prints it.
// and <output_dir>/checkpoints/latest, one line: the name of the newest checkpoint's folder.
//
// Saving (one rank, which holds output_dir's lock): the files go into .step_<N>.tmp-<pid>/ and are
// fsynced; the folder is renamed to step_<N>, or, when step_<N> exists (a step saved again after a
// resume), swapped with it in one step (renameat2 RENAME_EXCHANGE) and the old one removed; then
// `latest` is replaced (latest.tmp, fsync, rename) and the oldest checkpoints beyond `keep` are
// pruned. Where the file system cannot swap (NFS), `latest` first names a hard-linked copy of the
// new checkpoint (.step_<N>.tmp-<pid>.link), then the old step_<N> is moved aside and the new one
// renamed into place. So at every instant a complete checkpoint exists and `latest` names one; a
// crash leaves at most temporary entries (.step_*.tmp-*, latest.tmp), which
// remove_stale_temporaries() clears at the next start. A save that fails (disk full) removes its
// temporaries before the error goes on.
//
// Resuming verifies: every file present, trainer_state.json valid key by key, each file's size and
// checksum as recorded. A checkpoint of an older eaglet (no format_version) is accepted with a
// warning that it cannot be verified; a newer format_version is refused. A damaged `latest` under
// --resume auto is an error, not a silent fall-back to an older checkpoint (that would train steps
// again and, with checkpoint.keep, prune newer checkpoints): the error names what is wrong and the
// newest intact checkpoint with the --resume option that continues from it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"
#include "model/eagle3.h"
#include "model/vocab.h"
#include "train/optimizer.h"

namespace eaglet::train {

// The trainer_state.json format this build writes, and the newest it reads.
constexpr int64_t kCheckpointFormat = 1;

struct CheckpointFile {
  int64_t bytes = 0;
  uint64_t checksum = 0;  // XXH64, seed 0
};

// trainer_state.json, validated. The trainer's other keys stay in `json`.
struct TrainerState {
  int64_t format_version = 0;  // 0: an older eaglet's checkpoint, without sizes and checksums
  int64_t step = 0;            // optimizer steps taken
  int64_t cursor = 0;          // samples consumed from the sample stream, all replicas together
  int64_t skipped_steps = 0;   // steps skipped for a non-finite gradient norm (0 when absent)
  int64_t sp_size = 1;         // the sequence-parallel size P the data was sharded for
  std::map<std::string, CheckpointFile> files;  // format_version >= 1: the three other files
  nlohmann::json json;                          // the whole file
};

// Validates trainer_state.json `j` read from `path`, key by key: required step, cursor (integers
// >= 0) and sp_size (>= 1), optional skipped_steps (>= 0), format_version (1 ..
// kCheckpointFormat; absent: an older eaglet's), and with a format_version the "files" records.
// Errors name the file, the key, the value and what was expected:
//   checkpoint X/trainer_state.json: "step" is "forty", expected a non-negative integer
TrainerState parse_trainer_state(const nlohmann::json& j, const std::string& path);
// Reads and validates <dir>/trainer_state.json (errors as above; also for a file that is not JSON).
TrainerState read_trainer_state(const std::string& dir);

// Checks checkpoint folder `dir` completely: every file present, trainer_state.json valid, each
// file's size and checksum as recorded (reads every byte). Returns the state; throws eaglet::Error
// naming the file, the recorded and the found size or checksum. An older eaglet's checkpoint
// passes (format_version 0: nothing recorded to compare).
TrainerState verify_checkpoint(const std::string& dir);

// Saves step `step` as described above; call on one rank (every rank holds the same weights), the
// one that holds output_dir's lock. `trainer_state` must hold the keys parse_trainer_state()
// requires; format_version and files are added. Returns the checkpoint's folder.
std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const model::Eagle3Weights& w, const DraftArchConfig& arch,
                            const model::VocabMap& vocab, const AdamW& opt,
                            const nlohmann::json& trainer_state, int64_t keep);

// Removes the temporary entries of interrupted saves under <output_dir>/checkpoints
// (.step_*.tmp-* folders, latest.tmp) and returns their paths. Only for the process that holds
// output_dir's lock (then no save is in progress: every temporary is stale): the trainer's rank 0
// at start-up; save_checkpoint also calls it at its end and when it fails. Keeps the one folder
// `latest` may name after a crash in the no-swap fall-back above.
std::vector<std::string> remove_stale_temporaries(const std::string& output_dir);

// The checkpoint to resume from, verified (verify_checkpoint).
// "auto": the folder `latest` names under <output_dir>/checkpoints, or "" when there is no
// checkpoint at all. A `latest` that cannot be read, names a missing, incomplete or damaged
// checkpoint, or is missing while step_* folders exist, is an error naming the problem and the
// newest intact checkpoint (`... continue from it with --resume DIR`), or saying there is none.
// Anything else: that folder, which must hold a complete, intact checkpoint (errors name the
// problem). Logs a warning for an older eaglet's checkpoint, which cannot be verified.
std::string resolve_resume(const std::string& output_dir, const std::string& spec);

// Loads checkpoint `dir` (as resolve_resume returned it: verified there) into `w`, `vocab` and
// `opt` and returns its trainer state. Checks again what needs no reading of the data (files
// present, trainer_state.json valid, file sizes as recorded). Refuses a checkpoint of another
// architecture, naming the differing key and both values.
TrainerState load_checkpoint(const std::string& dir, const DraftArchConfig& arch,
                             model::Eagle3Weights& w, model::VocabMap& vocab, AdamW& opt);

}  // namespace eaglet::train
