// Checkpoints (DESIGN §6): <output_dir>/checkpoints/step_<8 digits>/ with model.safetensors (fp32,
// SGLang names, d2t/t2d) + config.json (the draft), optimizer.safetensors (AdamW moments and step
// counts) and trainer_state.json (step, data cursor, schedule, seed, topology, effective config).
// Written into a temporary folder, fsynced, renamed into place, then `latest` is replaced
// atomically: a crash mid-save never damages the previous checkpoint. Keeps the newest N.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "core/config.h"
#include "model/eagle3.h"
#include "model/vocab.h"
#include "train/optimizer.h"

namespace eaglet::train {

// Saves step `step`; call on one rank (every rank holds the same weights). Returns the folder.
std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const model::Eagle3Weights& w, const DraftArchConfig& arch,
                            const model::VocabMap& vocab, const AdamW& opt,
                            const nlohmann::json& trainer_state, int64_t keep);

// "auto": the folder `latest` names under <output_dir>/checkpoints, or "" when there is none;
// anything else: that folder, which must hold a complete checkpoint (error names what is missing).
std::string resolve_resume(const std::string& output_dir, const std::string& spec);

// Loads a checkpoint into `w`, `vocab` and `opt`; returns its trainer_state.json. Refuses a
// checkpoint of another architecture, naming the differing key and both values.
nlohmann::json load_checkpoint(const std::string& dir, const DraftArchConfig& arch,
                               model::Eagle3Weights& w, model::VocabMap& vocab, AdamW& opt);

}  // namespace eaglet::train
