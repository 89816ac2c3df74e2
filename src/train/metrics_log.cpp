// The metrics file: clean-up at open, checked appends.
#include "train/metrics_log.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/files.h"

namespace eaglet::train {
namespace {

// Keeps the whole, parseable lines of steps <= `keep`; returns {kept text, lines dropped}.
std::pair<std::string, int64_t> kept_lines(const std::string& text, int64_t keep) {
  std::string out;
  int64_t dropped = 0;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (end == std::string::npos) {  // no newline: a torn last line
      ++dropped;
      break;
    }
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool ok = j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                    j["step"].get<int64_t>() <= keep;
    if (ok)
      out += line + "\n";
    else
      ++dropped;
  }
  return {out, dropped};
}

}  // namespace

MetricsLog::MetricsLog(std::string path, int64_t keep_through_step) : path_(std::move(path)) {
  if (io::is_file(path_)) {
    std::ifstream in(path_, std::ios::binary);
    EAGLET_CHECK(in.good(), "{}: cannot read the metrics file", path_);
    std::stringstream buf;
    buf << in.rdbuf();
    auto [kept, dropped] = kept_lines(buf.str(), keep_through_step);
    if (dropped > 0) {
      const std::string tmp = path_ + ".tmp";
      io::write_file_synced(tmp, kept);
      EAGLET_CHECK(std::rename(tmp.c_str(), path_.c_str()) == 0, "cannot rename {} to {}: {}", tmp,
                   path_, std::strerror(errno));
      io::fsync_parent_dir(path_);
      spdlog::warn(
          "{}: removed {} line(s) that were torn or past step {} (this run writes those steps)",
          path_, dropped, keep_through_step);
    }
  }
  file_ = std::fopen(path_.c_str(), "a");
  EAGLET_CHECK(file_ != nullptr, "{}: cannot open the metrics file for appending: {}", path_,
               std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::fail(const std::string& what) {
  if (!failure_.empty()) return;
  failure_ = what;
  spdlog::error("{}: {} (the run stops at its next checkpoint)", path_, what);
}

void MetricsLog::write(const nlohmann::json& line) {
  const std::string text = line.dump() + "\n";
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0)
    fail(fmt::format("writing step {} failed: {}", line.value("step", int64_t{-1}),
                     errno ? std::strerror(errno) : "short write"));
}

void MetricsLog::check() {
  errno = 0;
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) {
    // fsync of a character device (a test's /dev/full) is EINVAL: not a write failure.
    if (errno != EINVAL) fail(fmt::format("flushing failed: {}", std::strerror(errno)));
  }
  EAGLET_CHECK(failure_.empty(), "{}: {}; free space there and resume with --resume auto", path_,
               failure_);
}

}  // namespace eaglet::train
