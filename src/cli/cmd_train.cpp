// eaglet train: the distributed training run.
#include "cli/commands.h"
#include "cli/session.h"
#include "train/trainer.h"

namespace eaglet::cli {

Command train_command() {
  auto opts = session_options();
  opts.push_back(
      {"--resume", "auto|PATH",
       "continue from the latest checkpoint under output_dir (auto; a fresh start when there is "
       "none) or from a checkpoint folder"});
  opts.push_back({"--dump-grads", "DIR",
                  "write every step's synced gradients (fp32, before clipping) to "
                  "DIR/grads_<step>.safetensors (rank 0), for comparing layouts"});
  return {"train",
          "train the Eagle3 draft on pre-sharded samples (mpirun -np N eaglet train --config "
          "run.yaml); "
          "SIGTERM/SIGUSR1 checkpoint at the next step and exit 0",
          opts, [](const ParsedArgs& args) {
            train::install_signal_handlers();
            return run_distributed(args, "train", [&](Session& s) {
              train::TrainOptions o;
              o.resume = args.get("--resume");
              o.dump_grads = args.get("--dump-grads");
              return train::run_training(s.config, s.env, *s.groups, o);
            });
          }};
}

}  // namespace eaglet::cli
