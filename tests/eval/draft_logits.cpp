// Test tool for tests/eval/draft_logits.sh: the trainer's own per-step draft logits on one full
// sample, for scripts/spec_eval.py's draft forward to be compared against. Loads a draft folder
// (model/draft_io.h load_draft: a checkpoint or an `eaglet export`, SGLang or vLLM names, any float
// dtype), the target's embedding (io/hf_target.h) and a full sample (data/synth.h
// read_full_sample), makes the sample one P = 1 shard as verify-usp does (C = L rows plus the T-row
// zero halo), runs the fp64 dense reference unroll (model/reference.h, which verify-usp holds
// equal to the training path) and writes each TTT step's logits [L, Vd] (fp64) to a safetensors
// file as logits_step<k>, with the draft's target ids of the draft vocabulary (draft_to_target).
// usage: draft_logits --draft DIR --target DIR --sample FILE --steps T --out FILE
// Exits 0 and prints "draft_logits: ... written", 2 on a bad input (the message names it).
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <exception>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "data/sharding.h"
#include "data/synth.h"
#include "io/files.h"
#include "io/hf_target.h"
#include "io/safetensors.h"
#include "model/draft_io.h"
#include "model/eagle3.h"
#include "model/reference.h"
#include "model/vocab.h"

namespace {

using namespace eaglet;

std::string arg(int argc, char** argv, const std::string& name) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  EAGLET_FAIL(
      "draft_logits: {} is required (usage: draft_logits --draft DIR --target DIR "
      "--sample FILE --steps T --out FILE)",
      name);
}

int run(int argc, char** argv) {
  const std::string draft = arg(argc, argv, "--draft"), target = arg(argc, argv, "--target"),
                    sample_path = arg(argc, argv, "--sample"), out = arg(argc, argv, "--out");
  const int64_t T = std::stoll(arg(argc, argv, "--steps"));
  // The draft's architecture as eaglet reads a draft config.json (model.config: FILE).
  const Config cfg = parse_config("model:\n  config: " + io::join_path(draft, "config.json") + "\n",
                                  "draft_logits");
  const auto& arch = cfg.model.config;
  const auto head = io::load_target_head(target, cfg.model.embedding_key, cfg.model.lm_head_key,
                                         cfg.model.norm_key);
  auto w = model::init_weights(arch, 0, c10::Device(c10::kCPU), head.embed_tokens);
  model::VocabMap vocab;
  model::load_draft(draft, arch, w, &vocab);
  EAGLET_CHECK(vocab.d2t.defined(), "draft_logits: {} has no d2t/t2d", draft);

  const auto s = data::read_full_sample(sample_path);
  const int64_t L = s.ids.size(0);
  EAGLET_CHECK(L > T, "draft_logits: sample {} has {} tokens, not more than --steps {}",
               sample_path, L, T);
  // One shard of the whole sample (P = 1), as verify-usp builds the reference's input.
  const auto geom = data::shard_geometry(L, L, 1, T);
  const auto t = data::slice_shard(s, geom, 0);
  std::vector<uint8_t> mask(L);
  auto m = s.loss_mask.to(at::kFloat).contiguous();
  for (int64_t i = 0; i < L; ++i) mask[i] = m.data_ptr<float>()[i] > 0.5f;
  const data::ShardInput in{t.hs.to(at::kFloat), t.ids, t.lhs.to(at::kFloat),
                            data::shard_loss_mask(mask, geom, 0),
                            data::ring_chunk_positions(geom, 1, 0)};
  const auto target_side = model::loss_target(head.lm_head, vocab, c10::Device(c10::kCPU));
  auto leaves = model::fp64_leaves(w);
  const auto ref = model::reference_unroll(arch, leaves, w.embed_tokens, target_side, in, T,
                                           std::vector<double>(T, 1.0), /*keep_logits=*/true);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int64_t k = 0; k < T; ++k)
    tensors.emplace_back(fmt::format("logits_step{}", k), ref.logits_k[k].contiguous());
  tensors.emplace_back("draft_to_target", vocab.draft_to_target().contiguous());
  io::write_safetensors(out, tensors, {{"steps", std::to_string(T)}, {"rows", std::to_string(L)}});
  std::cout << fmt::format("draft_logits: {} steps x [{}, {}] logits of {} on {} written to {}\n",
                           T, L, arch.draft_vocab_size, draft, sample_path, out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
}
