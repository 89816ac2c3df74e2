// Atomic checkpoint save, resume resolution and compatible loading.
#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>

#include "core/env.h"
#include "core/error.h"
#include "io/files.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/draft_io.h"

namespace eaglet::train {
namespace {

const char* kFiles[] = {"model.safetensors", "config.json", "optimizer.safetensors",
                        "trainer_state.json"};

std::string checkpoints_dir(const std::string& output_dir) {
  return io::join_path(output_dir, "checkpoints");
}

bool complete(const std::string& dir) {
  for (const char* f : kFiles)
    if (!io::is_file(io::join_path(dir, f))) return false;
  return true;
}

void prune(const std::string& root, int64_t keep) {
  std::vector<std::string> steps;
  for (const auto& name : io::list_dir(root))
    if (name.rfind("step_", 0) == 0 && io::is_dir(io::join_path(root, name))) steps.push_back(name);
  std::sort(steps.begin(), steps.end());  // zero-padded: lexical = numeric
  for (int64_t i = 0; i + keep < static_cast<int64_t>(steps.size()); ++i)
    io::remove_tree(io::join_path(root, steps[i]));
}

}  // namespace

std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const model::Eagle3Weights& w, const DraftArchConfig& arch,
                            const model::VocabMap& vocab, const AdamW& opt,
                            const nlohmann::json& trainer_state, int64_t keep) {
  const auto root = checkpoints_dir(output_dir);
  io::make_dirs(root);
  const auto name = fmt::format("step_{:08d}", step);
  const auto final_dir = io::join_path(root, name);
  const auto tmp = io::join_path(root, fmt::format(".{}.tmp-{}", name, ::getpid()));
  io::remove_tree(tmp);
  model::save_draft(tmp, w, arch, vocab);  // model.safetensors (fsynced) + config.json
  if (env::test_kill_in_checkpoint() == step) ::raise(SIGKILL);  // crash-safety test: die mid-save
  io::write_safetensors(io::join_path(tmp, "optimizer.safetensors"), opt.state());
  io::write_file_synced(io::join_path(tmp, "trainer_state.json"), trainer_state.dump(2) + "\n");
  io::fsync_parent_dir(io::join_path(tmp, "trainer_state.json"));
  if (io::path_exists(final_dir)) io::remove_tree(final_dir);  // re-saving a step after a resume
  EAGLET_CHECK(::rename(tmp.c_str(), final_dir.c_str()) == 0, "cannot rename {} to {}", tmp,
               final_dir);
  io::fsync_parent_dir(final_dir);
  const auto latest = io::join_path(root, "latest"), latest_tmp = latest + ".tmp";
  io::write_file_synced(latest_tmp, name + "\n");
  EAGLET_CHECK(::rename(latest_tmp.c_str(), latest.c_str()) == 0, "cannot update {}", latest);
  io::fsync_parent_dir(latest);
  prune(root, keep);
  return final_dir;
}

std::string resolve_resume(const std::string& output_dir, const std::string& spec) {
  if (spec != "auto") {
    EAGLET_CHECK(io::is_dir(spec), "--resume {}: no such checkpoint folder", spec);
    for (const char* f : kFiles)
      EAGLET_CHECK(io::is_file(io::join_path(spec, f)),
                   "--resume {}: not a complete checkpoint ({} is missing)", spec, f);
    return spec;
  }
  const auto root = checkpoints_dir(output_dir), latest = io::join_path(root, "latest");
  if (!io::is_file(latest)) return "";
  std::string name;
  {
    FILE* f = std::fopen(latest.c_str(), "r");
    EAGLET_CHECK(f != nullptr, "cannot read {}", latest);
    char buf[256] = {0};
    size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    name.assign(buf, n);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  }
  const auto dir = io::join_path(root, name);
  EAGLET_CHECK(complete(dir), "{} names {}, which is not a complete checkpoint", latest, dir);
  return dir;
}

nlohmann::json load_checkpoint(const std::string& dir, const DraftArchConfig& arch,
                               model::Eagle3Weights& w, model::VocabMap& vocab, AdamW& opt) {
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
  model::load_draft(dir, arch, w, &vocab);
  io::SafetensorsFile opt_file(io::join_path(dir, "optimizer.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& [name, info] : opt_file.tensors())
    state.emplace_back(name, opt_file.get(name).to(w.fc.device()));
  opt.load_state(state, opt_file.path());
  return io::read_json_object(io::join_path(dir, "trainer_state.json"));
}

}  // namespace eaglet::train
