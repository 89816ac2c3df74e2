// main of the LibTorch test binary (eaglet_tests), Catch2 2 and 3. A run that selects only [gpu]
// cases on a machine without a CUDA device exits 77, which ctest reports as skipped; inside a [gpu]
// case a missing device is a failure, so no GPU case passes without running.
#if EAGLET_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "dist/device.h"

namespace {
// Whether the test spec selects [gpu] cases only: every pattern of it (the arguments split at
// commas and spaces) requires the tag. Conservative whatever Catch2's and/or reading of several
// patterns: a pattern without "[gpu]" (a test name, "~[gpu]", "[model]") means no.
bool selects_only_gpu_cases(const std::vector<std::string>& spec) {
  int patterns = 0;
  for (const std::string& arg : spec) {
    std::string pattern;
    for (size_t i = 0; i <= arg.size(); ++i) {
      char c = i < arg.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(arg[i])))
                              : ',';
      if (c != ',' && c != ' ') {
        pattern += c;
        continue;
      }
      if (pattern.empty()) continue;
      size_t at = pattern.find("[gpu]");
      if (at == std::string::npos || (at > 0 && pattern[at - 1] == '~')) return false;
      ++patterns;
      pattern.clear();
    }
  }
  return patterns > 0;
}

// Listing (--list-tests, -l, ...) works everywhere.
bool lists(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--list", 0) == 0 || a == "-l" || a == "-t") return true;
  }
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  if (selects_only_gpu_cases(session.configData().testsOrTags) && !lists(argc, argv) &&
      eaglet::cuda_device_count() == 0) {
#ifdef EAGLET_WITH_CUDA
    std::puts("skipped: no CUDA device (the selected cases are all [gpu])");
#else
    std::puts("skipped: no CUDA device (the selected cases are all [gpu]; this build has no CUDA)");
#endif
    return 77;
  }
  return session.run();
}
