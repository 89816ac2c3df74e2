// `eaglet export`: a training checkpoint to the HF folder SGLang and vLLM load (DESIGN §7).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "io/files.h"
#include "io/hf_export.h"
#include "train/checkpoint.h"

namespace eaglet::cli {
namespace {

// "1,14,26" -> {1, 14, 26}; throws naming the option for anything else.
std::vector<int64_t> parse_layer_ids(const std::string& text) {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    EAGLET_CHECK(!item.empty() && used == item.size() && v >= 0,
                 "eaglet export: --aux-layer-ids {}: expected comma-separated non-negative layer "
                 "ids such as 1,14,26",
                 text);
    ids.push_back(v);
    pos = comma + 1;
  }
  return ids;
}

}  // namespace

Command export_command() {
  return {"export",
          "write a checkpoint as an HF Eagle3 draft folder that SGLang and vLLM both load (bf16 "
          "model.safetensors with SGLang names, embed_tokens, d2t, t2d, and a "
          "LlamaForCausalLMEagle3 config.json with the aux layer ids)",
          {{"--checkpoint", "DIR",
            "checkpoint folder (model.safetensors + config.json), or a run's output_dir or its "
            "checkpoints/ folder (then the latest checkpoint)"},
           {"--out", "DIR", "output folder; must not exist or be empty"},
           {"--aux-layer-ids", "IDS",
            "target layers the draft's inputs came from, e.g. 1,14,26 (default: the draft "
            "config's eagle_config.eagle_aux_hidden_state_layer_ids or "
            "eagle_aux_hidden_state_layer_ids)"},
           {"--target", "DIR",
            "target model HF folder for embed_tokens.weight (default: the checkpoint's own, else "
            "the run's model.target)"},
           {"--no-embeddings", "", "leave embed_tokens.weight out"},
           {"--vllm", "", "no longer needed: the one export serves SGLang and vLLM (accepted, "
                          "ignored)"}},
          [](const ParsedArgs& args) {
            EAGLET_CHECK(args.has("--checkpoint") && args.has("--out"),
                         "eaglet export: --checkpoint DIR and --out DIR are required");
            const std::string out = args.get("--out");
            std::string ckpt = args.get("--checkpoint");
            if (args.has("--vllm"))
              spdlog::warn(
                  "eaglet export: --vllm is no longer needed and changes nothing: the output is "
                  "identical, and vLLM renames 'midlayer.' to 'layers.0.' itself (a 'layers.0.' "
                  "export would load as an untrained decoder in SGLang)");
            io::ExportOptions options;
            options.embeddings = !args.has("--no-embeddings");
            options.target = args.get("--target");
            EAGLET_CHECK(options.embeddings || options.target.empty(),
                         "eaglet export: --target and --no-embeddings contradict each other");
            if (args.has("--aux-layer-ids"))
              options.aux_layer_ids = parse_layer_ids(args.get("--aux-layer-ids"));
            // A run's output_dir, or its checkpoints/ folder, stands for the checkpoint `latest`
            // names.
            if (!io::is_file(io::join_path(ckpt, "model.safetensors"))) {
              std::string run;
              if (io::is_file(io::join_path(io::join_path(ckpt, "checkpoints"), "latest")))
                run = ckpt;
              else if (io::is_file(io::join_path(ckpt, "latest")))
                run = io::parent_dir(io::strip_trailing_slashes(ckpt));
              if (!run.empty()) ckpt = train::resolve_resume(run, "auto");
            }
            try {
              io::export_draft(ckpt, out, options);
            } catch (const Error&) {
              throw;
            } catch (const std::exception& e) {
              // Anything else (LibTorch, allocation) still exits with a message naming the job.
              EAGLET_FAIL("eaglet export of {} to {} failed: {}", ckpt, out, e.what());
            }
            std::cout << fmt::format("exported {} to {}{}\n", ckpt, out,
                                     options.embeddings ? "" : " (without embed_tokens)");
            return 0;
          }};
}

}  // namespace eaglet::cli
