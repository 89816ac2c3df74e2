// Error construction: formats "what [rank N, file:line]" once so every catcher prints the same
// text.
#include "core/error.h"

#include <atomic>

namespace eaglet {
namespace {
std::atomic<int> g_rank{-1};

std::string short_file(const char* file) {
  std::string f(file);
  auto pos = f.rfind("/src/");
  if (pos == std::string::npos) pos = f.rfind("/tests/");
  return pos == std::string::npos ? f : f.substr(pos + 1);
}
}  // namespace

void set_error_rank(int rank) {
  g_rank = rank;
}
int error_rank() {
  return g_rank;
}

Error::Error(std::string what, const char* file, int line)
    : std::runtime_error(
          fmt::format("{} [rank {}, {}:{}]", what, g_rank.load(), short_file(file), line)),
      message_(std::move(what)),
      where_(fmt::format("{}:{}", short_file(file), line)),
      rank_(g_rank) {}

void throw_error(const char* file, int line, std::string what) {
  throw Error(std::move(what), file, line);
}

}  // namespace eaglet
