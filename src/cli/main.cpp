// eaglet's entry point: the table of subcommands, their help, and dispatch.
#include <fmt/format.h>
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/session.h"
#include "core/config.h"
#include "core/env.h"
#include "core/error.h"
#include "dist/device.h"
#include "dist/selfcheck.h"
#include "dist/topology.h"

#ifndef EAGLET_VERSION
#define EAGLET_VERSION "dev"
#endif

namespace eaglet::cli {
namespace {

int run_topo(const ParsedArgs& args) {
  return run_distributed(args, "topo", [](Session& s) {
    const auto& g = *s.groups;
    std::istringstream layout(describe(g.layout()));
    for (std::string line; std::getline(layout, line);) spdlog::info("{}", line);
    // Where each rank runs: host and device, gathered on rank 0.
    char host[64] = {0};
    gethostname(host, sizeof(host) - 1);
    const auto where =
        s.env.gather_text(fmt::format("{} {}", host, device_description(g.device())));
    for (size_t r = 0; r < where.size(); ++r) spdlog::info("rank {}: {}", r, where[r]);
    auto result = run_selfcheck(g);
    for (const auto& f : result.failures) spdlog::error("topo check failed: {}", f);
    // Tally over MPI directly: the communicators under test are not trusted to report on
    // themselves.
    const auto total = s.env.sum({result.checks, static_cast<int64_t>(result.failures.size())});
    spdlog::info("topo: {} backend on {}: {} checks over {} ranks, {} failed: {}",
                 g.group(GroupKind::world).backend(), g.device().is_cpu() ? "cpu" : "cuda",
                 total[0], g.layout().world, total[1], total[1] == 0 ? "PASS" : "FAIL");
    return total[1] == 0 ? 0 : 1;
  });
}

int run_config(const ParsedArgs& args) {
  if (args.has("--reference")) {
    std::cout << reference_markdown();
    return 0;
  }
  if (args.has("--reference-yaml")) {
    std::cout << reference_yaml();
    return 0;
  }
  EAGLET_CHECK(args.has("--config"), "eaglet config: --config FILE (or --reference) is required");
  Config cfg = load_config(args.get("--config"), args.all("--set"));
  int64_t world = std::stoll(args.get("--world", "1"));
  check_valid(cfg, world);
  std::cout << to_yaml(cfg);
  return 0;
}

std::vector<Command> commands() {
  auto with_session = [](std::vector<OptionSpec> extra) {
    auto opts = session_options();
    opts.insert(opts.end(), extra.begin(), extra.end());
    return opts;
  };
  return {
      {"topo",
       "print the rank layout (Ulysses, ring, SP, DP groups) and check every collective on every "
       "group with known values (MPI on CPU, NCCL on GPU)",
       with_session({}), run_topo},
      {"config",
       "check a config without running it and print the effective config (defaults filled in), or "
       "print the reference of every key",
       {{"--config", "FILE", "run configuration (YAML)"},
        {"--set", "KEY=VALUE", "override one config key", true},
        {"--world", "N", "world size to validate against (default 1)"},
        {"--reference", "", "print the Markdown table of every key (docs/CONFIG.md)"},
        {"--reference-yaml", "", "print every key as commented YAML (configs/reference.yaml)"}},
       run_config},
      train_command(),
      export_command(),
      verify_usp_command(),
      bench_command(),
      data_command(),
      {"version",
       "print the version",
       {},
       [](const ParsedArgs&) {
         std::cout << "eaglet " << EAGLET_VERSION << "\n";
         return 0;
       }},
  };
}

// A bad command line is the same on every rank (the same argv): under mpirun only rank 0 prints
// it, the others exit with the same code silently. MPI is not initialised yet, so the rank comes
// from the launcher's environment; without a launcher the process is rank 0.
int command_line_error(const std::string& text) {
  if (env::launcher_rank().value_or(0) == 0) std::cerr << text;
  return 2;
}

}  // namespace
}  // namespace eaglet::cli

int main(int argc, char** argv) {
  using namespace eaglet::cli;
  auto table = commands();
  std::string name = argc > 1 ? argv[1] : "";
  if (name.empty()) return command_line_error(usage(table));
  const bool first_rank = eaglet::env::launcher_rank().value_or(0) == 0;  // help once under mpirun
  if (name == "--help" || name == "-h" || name == "help") {
    if (first_rank) std::cout << usage(table);
    return 0;
  }
  if (name == "--version") name = "version";
  for (const auto& cmd : table) {
    if (cmd.name != name) continue;
    ParsedArgs args;
    try {
      args = parse_args(cmd, argc, argv, 2);
    } catch (const eaglet::Error& e) {
      return command_line_error("eaglet: " + e.message() + "\n");
    }
    if (args.has("--help")) {
      if (first_rank) std::cout << command_help(cmd);
      return 0;
    }
    try {
      return cmd.run(args);
    } catch (const eaglet::Error& e) {
      // Errors before any communicator exists (distributed commands catch their own): printed by
      // every rank, since a file one rank cannot read may be readable on another.
      std::cerr << "eaglet: " << e.message() << "\n";
      return 2;
    }
  }
  return command_line_error("eaglet: unknown command '" + name + "'\n\n" + usage(table));
}
