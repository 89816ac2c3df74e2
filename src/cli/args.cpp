// Option parsing and help text for subcommands.
#include "cli/args.h"

#include <fmt/format.h>

#include "core/error.h"

namespace eaglet::cli {

std::string ParsedArgs::get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? fallback : it->second.back();
}

const std::vector<std::string>& ParsedArgs::all(const std::string& name) const {
  static const std::vector<std::string> kNone;
  auto it = values.find(name);
  return it == values.end() ? kNone : it->second;
}

ParsedArgs parse_args(const Command& cmd, int argc, char** argv, int first) {
  ParsedArgs out;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      out.values["--help"].push_back("");
      continue;
    }
    const OptionSpec* spec = nullptr;
    for (const auto& o : cmd.options)
      if (o.name == arg) spec = &o;
    if (spec == nullptr)
      EAGLET_FAIL("eaglet {}: unknown option '{}' (see eaglet {} --help)", cmd.name, arg, cmd.name);
    if (!spec->metavar.empty() && !inline_value) {
      EAGLET_CHECK(i + 1 < argc, "eaglet {}: option {} needs a value {}", cmd.name, arg,
                   spec->metavar);
      value = argv[++i];
    }
    auto& slot = out.values[arg];
    EAGLET_CHECK(spec->repeatable || slot.empty(), "eaglet {}: option {} given twice", cmd.name,
                 arg);
    slot.push_back(value);
  }
  return out;
}

std::string command_help(const Command& cmd) {
  std::string out =
      fmt::format("usage: eaglet {} [options]\n\n{}\n\noptions:\n", cmd.name, cmd.summary);
  for (const auto& o : cmd.options) {
    std::string left = o.name + (o.metavar.empty() ? "" : " " + o.metavar);
    out += fmt::format("  {:<24} {}{}\n", left, o.help, o.repeatable ? " (repeatable)" : "");
  }
  out += fmt::format("  {:<24} {}\n", "--help", "show this help");
  return out;
}

std::string usage(const std::vector<Command>& commands) {
  std::string out =
      "eaglet: Eagle3 draft-model trainer with Ulysses x Ring sequence parallelism\n\n"
      "usage: mpirun -np N eaglet <command> [options]\n       eaglet <command> "
      "--help\n\ncommands:\n";
  for (const auto& c : commands) out += fmt::format("  {:<10} {}\n", c.name, c.summary);
  out +=
      "\nexit codes: 0 success; 1 runtime failure (the job was aborted on every rank);\n"
      "            2 bad command line, config or input: every rank exits 2, rank 0 says why.\n"
      "docs: README.md, docs/GUIDE.md (user guide), docs/CONFIG.md (every config key), "
      "docs/SLURM.md\n";
  return out;
}

}  // namespace eaglet::cli
