// Crash-safe checkpoint saving, start-up clean-up, verification, resume resolution and loading.
#include "train/checkpoint.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <limits>
#include <optional>

#include "core/env.h"
#include "core/error.h"
#include "io/checksum.h"
#include "io/files.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/draft_io.h"

namespace eaglet::train {
namespace {

// The data files, recorded with size and checksum in trainer_state.json, which is written last.
const char* const kDataFiles[] = {"model.safetensors", "config.json", "optimizer.safetensors"};
const char* const kStateFile = "trainer_state.json";
const char* const kAllFiles[] = {"model.safetensors", "config.json", "optimizer.safetensors",
                                 "trainer_state.json"};

std::string checkpoints_dir(const std::string& output_dir) {
  return io::join_path(output_dir, "checkpoints");
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Crash-safety tests (EAGLET_TEST_KILL_IN_CHECKPOINT=<step>:<point>): SIGKILL at `point` of saving
// `step`. The points, in order:
//   half     model.safetensors and config.json written, optimizer.safetensors not yet
//   written  every file written and fsynced in the temporary folder, nothing moved yet
//   aside    (no-swap fall-back only) `latest` names the hard-linked copy, the old step_<N> moved
//            aside, the new one not yet in place
//   placed   the new step_<N> in place (the one it replaced not yet removed), `latest` not updated
//   latest   `latest` names the new checkpoint, older ones not yet pruned
void kill_point(int64_t step, const char* point) {
  const auto kill = env::test_kill_in_checkpoint();
  if (kill && kill->step == step && kill->point == point) ::raise(SIGKILL);
}

// Checkpoint folders (step_*) under `root`, oldest first (zero-padded: lexical = numeric).
std::vector<std::string> step_folders(const std::string& root) {
  std::vector<std::string> steps;
  if (!io::is_dir(root)) return steps;
  for (const auto& name : io::list_dir(root))
    if (starts_with(name, "step_") && io::is_dir(io::join_path(root, name))) steps.push_back(name);
  return steps;
}

// The folder name `latest` holds. Throws naming the file when it cannot be read or does not hold
// one plain name.
std::string read_latest(const std::string& root) {
  const auto latest = io::join_path(root, "latest");
  std::string name = io::read_text_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  EAGLET_CHECK(!name.empty() && name.find('/') == std::string::npos &&
                   name.find('\n') == std::string::npos && name != "." && name != "..",
               "{} holds {}, not the name of a checkpoint folder", latest,
               nlohmann::json(name).dump());
  return name;
}

// The name `latest` holds, or "" when it is missing or unusable (then it names nothing to keep).
std::string latest_or_empty(const std::string& root) {
  if (!io::path_exists(io::join_path(root, "latest"))) return "";
  try {
    return read_latest(root);
  } catch (const Error&) {
    return "";
  }
}

// `latest` -> `name`, atomically (latest.tmp, fsync, rename, fsync of the folder).
void write_latest(const std::string& root, const std::string& name) {
  const auto latest = io::join_path(root, "latest"), latest_tmp = latest + ".tmp";
  io::write_file_synced(latest_tmp, name + "\n");
  io::rename_path(latest_tmp, latest);
  io::fsync_parent_dir(latest);
}

// Keeps `current` and the newest keep - 1 other checkpoints. `current`, which `latest` names by
// now, is kept even when newer ones exist (a run resumed from an older checkpoint).
void prune(const std::string& root, const std::string& current, int64_t keep) {
  auto others = step_folders(root);
  others.erase(std::remove(others.begin(), others.end(), current), others.end());
  const int64_t remove = static_cast<int64_t>(others.size()) - std::max<int64_t>(keep - 1, 0);
  for (int64_t i = 0; i < remove; ++i) io::remove_tree(io::join_path(root, others[i]));
}

// --- trainer_state.json
// ---------------------------------------------------------------------------

[[noreturn]] void bad_key(const std::string& path, const std::string& key,
                          const nlohmann::json* value, const std::string& expected) {
  if (value == nullptr)
    EAGLET_FAIL("checkpoint {}: \"{}\" is missing, expected {}", path, key, expected);
  EAGLET_FAIL("checkpoint {}: \"{}\" is {}, expected {}", path, key, value->dump(), expected);
}

// Integer key >= `min`; `fallback` (when given) stands for an absent key.
int64_t int_key(const nlohmann::json& j, const std::string& key, int64_t min,
                const std::string& path, std::optional<int64_t> fallback = std::nullopt,
                const std::string& label = "") {
  const std::string name = label.empty() ? key : label;
  const std::string expected =
      min == 0 ? "a non-negative integer" : fmt::format("an integer >= {}", min);
  auto it = j.find(key);
  if (it == j.end()) {
    if (fallback) return *fallback;
    bad_key(path, name, nullptr, expected);
  }
  const bool fits = it->is_number_unsigned()
                        ? it->get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()}
                        : it->is_number_integer();
  if (!fits || it->get<int64_t>() < min) bad_key(path, name, &*it, expected);
  return it->get<int64_t>();
}

std::optional<uint64_t> parse_hex64(const nlohmann::json& v) {
  if (!v.is_string()) return std::nullopt;
  const auto s = v.get<std::string>();
  if (s.size() != 16 || s.find_first_not_of("0123456789abcdef") != std::string::npos)
    return std::nullopt;
  return std::stoull(s, nullptr, 16);
}

// --- verification
// ---------------------------------------------------------------------------------

void check_complete(const std::string& dir) {
  EAGLET_CHECK(io::is_dir(dir), "checkpoint {}: no such folder", dir);
  for (const char* f : kAllFiles)
    EAGLET_CHECK(io::is_file(io::join_path(dir, f)), "checkpoint {} is not complete: {} is missing",
                 dir, f);
}

void check_sizes(const std::string& dir, const TrainerState& state) {
  for (const auto& [name, rec] : state.files) {
    const auto path = io::join_path(dir, name);
    const int64_t bytes = io::file_size(path);
    EAGLET_CHECK(bytes == rec.bytes,
                 "checkpoint file {} has {} bytes, but trainer_state.json records {} (truncated or "
                 "changed after the save)",
                 path, bytes, rec.bytes);
  }
}

// "The newest intact checkpoint is ...: continue from it with --resume ...", or that there is
// none; `exclude` (the damaged one) is not looked at.
std::string offer_intact(const std::string& root, const std::string& exclude) {
  auto names = step_folders(root);
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (*it == exclude) continue;
    const auto dir = io::join_path(root, *it);
    try {
      const auto state = verify_checkpoint(dir);
      return fmt::format(
          "The newest intact checkpoint is {0}{1}: continue from it with --resume {0}", dir,
          state.format_version == 0 ? " (an older eaglet's, not verifiable)" : "");
    } catch (const Error&) {
    }
  }
  return fmt::format("There is no intact checkpoint under {} (move it away to start afresh)", root);
}

void warn_if_unverified(const std::string& dir, const TrainerState& state) {
  if (state.format_version == 0)
    spdlog::warn(
        "checkpoint {} was written by an older eaglet (no format_version in {}): its files "
        "cannot be verified",
        dir, kStateFile);
}

// --- saving
// ---------------------------------------------------------------------------------------

// The four files into the temporary folder `tmp`; trainer_state.json last, with the sizes and
// checksums of the others.
void write_files(const std::string& tmp, int64_t step, const model::Eagle3Weights& w,
                 const DraftArchConfig& arch, const model::VocabMap& vocab, const AdamW& opt,
                 const nlohmann::json& trainer_state) {
  model::save_draft(tmp, w, arch, vocab);  // model.safetensors + config.json, fsynced
  kill_point(step, "half");
  io::write_safetensors(io::join_path(tmp, "optimizer.safetensors"), opt.state());
  auto state = trainer_state;
  state["format_version"] = kCheckpointFormat;
  state["files"] = nlohmann::json::object();
  for (const char* f : kDataFiles) {
    const auto path = io::join_path(tmp, f);
    state["files"][f] = {{"bytes", io::file_size(path)},
                         {"checksum", io::checksum_hex(io::file_checksum64(path))}};
  }
  const auto path = io::join_path(tmp, kStateFile);
  parse_trainer_state(state, path);  // a checkpoint that could not be resumed fails now
  io::write_file_synced(path, state.dump(2) + "\n");
  io::fsync_parent_dir(path);
  kill_point(step, "written");
}

// Moves the finished temporary folder `tmp` to root/name such that at every instant a complete
// checkpoint exists and `latest` names one (see checkpoint.h).
void put_in_place(const std::string& root, const std::string& name, const std::string& tmp,
                  int64_t step) {
  const auto final_dir = io::join_path(root, name);
  if (!io::path_exists(final_dir)) {
    io::rename_path(tmp, final_dir);
    io::fsync_parent_dir(final_dir);
    kill_point(step, "placed");
    return;
  }
  if (!env::test_no_rename_exchange() && io::exchange_paths(tmp, final_dir)) {
    io::fsync_parent_dir(final_dir);
    kill_point(step, "placed");
    io::remove_tree(tmp);  // now the replaced checkpoint
    return;
  }
  // No atomic swap here: step_<N> is missing for a moment. If `latest` names it, it names a
  // hard-linked copy of the new checkpoint meanwhile (removed with the other temporaries).
  if (latest_or_empty(root) == name) {
    const auto copy = tmp + ".link";
    io::remove_tree(copy);
    io::make_dirs(copy);
    for (const char* f : kAllFiles) io::link_file(io::join_path(tmp, f), io::join_path(copy, f));
    io::fsync_parent_dir(io::join_path(copy, kStateFile));
    io::fsync_parent_dir(copy);
    write_latest(root, copy.substr(root.size() + 1));
  }
  const auto aside = tmp + ".old";
  io::rename_path(final_dir, aside);
  kill_point(step, "aside");
  io::rename_path(tmp, final_dir);
  io::fsync_parent_dir(final_dir);
  kill_point(step, "placed");
  io::remove_tree(aside);
}

}  // namespace

TrainerState parse_trainer_state(const nlohmann::json& j, const std::string& path) {
  EAGLET_CHECK(j.is_object(), "checkpoint {}: must hold a JSON object, not {}", path,
               j.type_name());
  TrainerState s;
  s.format_version = int_key(j, "format_version", 1, path, 0);
  EAGLET_CHECK(s.format_version <= kCheckpointFormat,
               "checkpoint {}: format_version {} is newer than this eaglet reads (up to {}): "
               "resume it with the eaglet that wrote it or a newer one",
               path, s.format_version, kCheckpointFormat);
  s.step = int_key(j, "step", 0, path);
  s.cursor = int_key(j, "cursor", 0, path);
  s.skipped_steps = int_key(j, "skipped_steps", 0, path, 0);
  s.sp_size = int_key(j, "sp_size", 1, path);
  if (s.format_version >= 1) {
    const auto files = j.find("files");
    const std::string expected = "an object with \"bytes\" and \"checksum\" of each file";
    if (files == j.end() || !files->is_object())
      bad_key(path, "files", files == j.end() ? nullptr : &*files, expected);
    for (const char* f : kDataFiles) {
      const std::string key = fmt::format("files.{}", f);
      const auto rec = files->find(f);
      if (rec == files->end() || !rec->is_object())
        bad_key(path, key, rec == files->end() ? nullptr : &*rec, expected);
      CheckpointFile file;
      file.bytes = int_key(*rec, "bytes", 0, path, std::nullopt, key + ".bytes");
      const auto sum = rec->find("checksum");
      const auto hex = sum == rec->end() ? std::nullopt : parse_hex64(*sum);
      if (!hex)
        bad_key(path, key + ".checksum", sum == rec->end() ? nullptr : &*sum,
                "16 lower-case hex digits");
      file.checksum = *hex;
      s.files[f] = file;
    }
  }
  s.json = j;
  return s;
}

TrainerState read_trainer_state(const std::string& dir) {
  const auto path = io::join_path(dir, kStateFile);
  const auto text = io::read_text_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    EAGLET_FAIL("checkpoint {}: not valid JSON ({})", path, e.what());
  }
  return parse_trainer_state(j, path);
}

TrainerState verify_checkpoint(const std::string& dir) {
  check_complete(dir);
  auto state = read_trainer_state(dir);
  check_sizes(dir, state);  // all sizes before reading any data
  for (const auto& [name, rec] : state.files) {
    const auto path = io::join_path(dir, name);
    const uint64_t found = io::file_checksum64(path);
    EAGLET_CHECK(found == rec.checksum,
                 "checkpoint file {} has checksum {}, but trainer_state.json records {} (both {} "
                 "bytes): the file was damaged or changed after the save",
                 path, io::checksum_hex(found), io::checksum_hex(rec.checksum), rec.bytes);
  }
  return state;
}

std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const model::Eagle3Weights& w, const DraftArchConfig& arch,
                            const model::VocabMap& vocab, const AdamW& opt,
                            const nlohmann::json& trainer_state, int64_t keep) {
  const auto root = checkpoints_dir(output_dir);
  io::make_dirs(root);
  const auto name = fmt::format("step_{:08d}", step);
  const auto tmp = io::join_path(root, fmt::format(".{}.tmp-{}", name, ::getpid()));
  io::remove_tree(tmp);
  try {
    write_files(tmp, step, w, arch, vocab, opt, trainer_state);
    put_in_place(root, name, tmp, step);
    write_latest(root, name);
  } catch (...) {
    // Disk full, an I/O error: leave no temporary behind (this process holds the lock, so every
    // temporary is this save's or stale) but what `latest` names; the save's error goes on.
    try {
      remove_stale_temporaries(output_dir);
    } catch (...) {
    }
    throw;
  }
  kill_point(step, "latest");
  prune(root, name, keep);
  remove_stale_temporaries(output_dir);  // the no-swap fall-back's copy, no longer named
  return io::join_path(root, name);
}

std::vector<std::string> remove_stale_temporaries(const std::string& output_dir) {
  const auto root = checkpoints_dir(output_dir);
  std::vector<std::string> removed;
  if (!io::is_dir(root)) return removed;
  // A temporary `latest` names (after a crash in the no-swap fall-back) is kept.
  const std::string in_use = latest_or_empty(root);
  for (const auto& entry : io::list_dir(root)) {
    const bool temporary = entry == "latest.tmp" || (starts_with(entry, ".step_") &&
                                                     entry.find(".tmp-") != std::string::npos);
    if (!temporary || entry == in_use) continue;
    const auto path = io::join_path(root, entry);
    io::remove_tree(path);
    if (!io::path_exists(path)) removed.push_back(path);
  }
  return removed;
}

std::string resolve_resume(const std::string& output_dir, const std::string& spec) {
  if (spec != "auto") {
    EAGLET_CHECK(io::is_dir(spec), "--resume {}: no such checkpoint folder", spec);
    for (const char* f : kAllFiles)
      EAGLET_CHECK(io::is_file(io::join_path(spec, f)),
                   "--resume {}: not a complete checkpoint ({} is missing)", spec, f);
    TrainerState state;
    try {
      state = verify_checkpoint(spec);
    } catch (const Error& e) {
      EAGLET_FAIL("--resume {}: {}", spec, e.message());
    }
    warn_if_unverified(spec, state);
    return spec;
  }
  const auto root = checkpoints_dir(output_dir), latest = io::join_path(root, "latest");
  if (!io::path_exists(latest)) {
    if (step_folders(root).empty()) return "";  // a fresh start
    EAGLET_FAIL(
        "--resume auto: {} holds checkpoints but no `latest` (a save stopped before it named its "
        "checkpoint?). {}",
        root, offer_intact(root, ""));
  }
  std::string name, problem;
  TrainerState state;
  try {
    name = read_latest(root);
    state = verify_checkpoint(io::join_path(root, name));
  } catch (const Error& e) {
    problem = e.message();
  }
  if (!problem.empty()) {
    const auto what = name.empty() ? std::string("cannot be used")
                                   : fmt::format("names {}, which cannot be resumed", name);
    EAGLET_FAIL("--resume auto: {} {}: {}. {}", latest, what, problem, offer_intact(root, name));
  }
  const auto dir = io::join_path(root, name);
  warn_if_unverified(dir, state);
  return dir;
}

TrainerState load_checkpoint(const std::string& dir, const DraftArchConfig& arch,
                             model::Eagle3Weights& w, model::VocabMap& vocab, AdamW& opt) {
  check_complete(dir);
  auto state = read_trainer_state(dir);
  check_sizes(dir, state);
  const auto config_path = io::join_path(dir, "config.json");
  auto saved = io::read_json_object(config_path);
  auto want = model::draft_config_json(arch);
  for (const char* key :
       {"hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size", "vocab_size", "draft_vocab_size", "target_hidden_size"}) {
    EAGLET_CHECK(
        saved.contains(key) && saved[key] == want[key],
        "checkpoint {} is for another model: {} is {} there and {} in this run's model.config", dir,
        key, saved.contains(key) ? saved[key].dump() : "missing", want[key].dump());
  }
  // Absent in configs of 3-aux drafts (draft_config_json writes it only otherwise).
  const int64_t saved_aux = saved.value("num_aux_hidden_states", int64_t{3});
  EAGLET_CHECK(saved_aux == arch.num_aux_hidden_states,
               "checkpoint {} is for another model: num_aux_hidden_states is {} there (fc takes {} "
               "aux layers) and {} in this run's model.config",
               dir, saved_aux, saved_aux, arch.num_aux_hidden_states);
  model::load_draft(dir, arch, w, &vocab);
  io::SafetensorsFile opt_file(io::join_path(dir, "optimizer.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> state_tensors;
  for (const auto& [name, info] : opt_file.tensors())
    state_tensors.emplace_back(name, opt_file.get(name).to(w.fc.device()));
  opt.load_state(state_tensors, opt_file.path());
  return state;
}

}  // namespace eaglet::train
