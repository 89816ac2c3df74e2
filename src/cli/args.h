// Command-line parsing: each subcommand declares its options; anything else is an error that
// names the option and the command.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace eaglet::cli {

struct OptionSpec {
  std::string name;     // "--config"
  std::string metavar;  // "FILE"; empty for a flag
  std::string help;
  bool repeatable = false;
};

struct ParsedArgs {
  std::map<std::string, std::vector<std::string>> values;  // option -> every value given
  bool has(const std::string& name) const { return values.count(name) > 0; }
  // Last value of an option, or `fallback`.
  std::string get(const std::string& name, const std::string& fallback = "") const;
  const std::vector<std::string>& all(const std::string& name) const;
};

struct Command {
  std::string name;
  std::string summary;
  std::vector<OptionSpec> options;
  std::function<int(const ParsedArgs&)> run;
};

// Parses argv[first..argc) against `cmd`; throws eaglet::Error on unknown or incomplete options.
ParsedArgs parse_args(const Command& cmd, int argc, char** argv, int first);
std::string command_help(const Command& cmd);
std::string usage(const std::vector<Command>& commands);

}  // namespace eaglet::cli
