// Known-value checks of every collective on every group (what `eaglet topo` runs): each case
// fills rank-dependent inputs, runs one operation and compares with the closed-form result.
#pragma once

#include <string>
#include <vector>

#include "dist/process_groups.h"

namespace eaglet {

struct SelfCheckResult {
  int64_t checks = 0;
  std::vector<std::string> failures;  // this rank's, one line each
};

// Collective: every rank of the world must call it. Runs in a fixed order over group kinds,
// dtypes (float32, bfloat16, int64) and operations.
SelfCheckResult run_selfcheck(const ProcessGroups& groups);

}  // namespace eaglet
