// Builds the one default spdlog logger with a console sink and, once known, a per-rank file sink.
#include "core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <filesystem>

#include "core/env.h"
#include "core/error.h"

namespace eaglet::log {
namespace {
std::string pattern(int rank) {
  return fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%l] %v", rank);
}

spdlog::level::level_enum parse_level(const std::string& name) {
  auto lvl = spdlog::level::from_str(name);
  if (lvl == spdlog::level::off && name != "off")
    EAGLET_FAIL("runtime.log_level={}: not one of trace, debug, info, warn, error", name);
  return lvl;
}
}  // namespace

void init_console(int rank) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(rank == 0 ? spdlog::level::info : spdlog::level::err);
  auto logger = std::make_shared<spdlog::logger>("eaglet", console);
  logger->set_pattern(pattern(rank));
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void init_files(int rank, const std::string& output_dir, const std::string& level) {
  auto lvl = parse_level(env::log_level().value_or(level));
  auto dir = std::filesystem::path(output_dir) / "logs";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EAGLET_CHECK(!ec, "cannot create log folder {}: {}", dir.string(), ec.message());
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
      (dir / fmt::format("rank{}.log", rank)).string(), /*truncate=*/false);
  file->set_level(spdlog::level::trace);
  auto logger = spdlog::default_logger();
  logger->sinks().front()->set_level(rank == 0 ? lvl : spdlog::level::err);
  logger->sinks().push_back(file);
  logger->set_pattern(pattern(rank));
  logger->set_level(std::min(lvl, spdlog::level::info));
}

void flush() {
  if (auto l = spdlog::default_logger()) l->flush();
}

}  // namespace eaglet::log
