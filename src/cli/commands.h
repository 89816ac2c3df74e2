// Subcommands defined in their own files (cmd_<name>.cpp), listed by commands() in main.cpp.
#pragma once

#include "cli/args.h"

namespace eaglet::cli {

// eaglet export --checkpoint DIR --out DIR [--vllm]
Command export_command();

}  // namespace eaglet::cli
