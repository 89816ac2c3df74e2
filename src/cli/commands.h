// Subcommands defined in their own files (cmd_<name>.cpp), listed by commands() in main.cpp.
#pragma once

#include "cli/args.h"

namespace eaglet::cli {

// eaglet export --checkpoint DIR --out DIR [--aux-layer-ids IDS] [--target DIR] [--no-embeddings]
Command export_command();
// eaglet verify-usp --config FILE [--seq N] [--tol X] [--loss-in-last-shard]
Command verify_usp_command();
// eaglet train --config FILE [--set k=v]... [--resume auto|PATH]
Command train_command();
// eaglet bench --config FILE [--seq N] [--steps N]
Command bench_command();
// eaglet data synth|put|check --config FILE ... (docs/DATA.md)
Command data_command();

}  // namespace eaglet::cli
