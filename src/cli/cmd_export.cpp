// `eaglet export`: a training checkpoint to the HF folder an inference engine loads (DESIGN §7).
#include <fmt/format.h>

#include <exception>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "io/files.h"
#include "io/hf_export.h"
#include "train/checkpoint.h"

namespace eaglet::cli {

Command export_command() {
  return {"export",
          "write a checkpoint as an HF Eagle3 draft folder (bf16 model.safetensors with SGLang "
          "names, d2t, t2d, and a LlamaForCausalLMEagle3 config.json) that SGLang loads",
          {{"--checkpoint", "DIR",
            "checkpoint folder (model.safetensors + config.json), or a run's output_dir or its "
            "checkpoints/ folder (then the latest checkpoint)"},
           {"--out", "DIR", "output folder; must not exist or be empty"},
           {"--vllm", "", "name the layer 'layers.0.' instead of 'midlayer.' (vLLM)"}},
          [](const ParsedArgs& args) {
            EAGLET_CHECK(args.has("--checkpoint") && args.has("--out"),
                         "eaglet export: --checkpoint DIR and --out DIR are required");
            const std::string out = args.get("--out");
            std::string ckpt = args.get("--checkpoint");
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
              io::export_draft(ckpt, out, args.has("--vllm"));
            } catch (const Error&) {
              throw;
            } catch (const std::exception& e) {
              // Anything else (LibTorch, allocation) still exits with a message naming the job.
              EAGLET_FAIL("eaglet export of {} to {} failed: {}", ckpt, out, e.what());
            }
            std::cout << fmt::format("exported {} to {}{}\n", ckpt, out,
                                     args.has("--vllm") ? " (vLLM names)" : "");
            return 0;
          }};
}

}  // namespace eaglet::cli
