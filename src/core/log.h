// Rank-aware logging on spdlog: every line carries the rank; rank 0 writes info to the console,
// other ranks only their errors; every rank writes everything to <output_dir>/logs/rank<N>.log.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace eaglet::log {

// Console-only logging before the config (and so the output folder) is known.
void init_console(int rank);
// Adds the per-rank file sink under <output_dir>/logs and sets the level (trace..error).
void init_files(int rank, const std::string& output_dir, const std::string& level);
// Flushes every sink (call before exiting or aborting).
void flush();

}  // namespace eaglet::log
