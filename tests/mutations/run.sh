#!/usr/bin/env bash
# Shows that a check catches the bug class it exists for: builds eaglet with one deliberate bug in
# a scratch worktree of HEAD and runs the checks made for it, which must FAIL. Not part of CI (it
# builds eaglet once per mutation; ccache makes that the one changed file). Mutations, with the
# tests each one runs:
#   dp_sum        the gradient sync sums over data-parallel replicas instead of averaging
#                 (src/train/optimizer.cpp: the ÷ D removed)
#   no_accum_div  the step weights are not divided by training.grad_accum
#                 (src/train/step.cpp: w_k instead of w_k / grad_accum)
#     both: the gradient-level equivalence checks (mpi_train_equivalence, verify-usp layouts)
#   no_watchdog   the watchdog never fires (src/dist/watchdog.cpp)         mpi_fault_stop
#   no_nan_scan   hidden states are not checked for NaN/Inf (data/shard_reader.cpp)
#                                                                          mpi_fault_nonfinite
#   no_bad_bound  a run with too many bad samples or none trained passes (train/trainer.cpp)
#                                                                          mpi_fault_neutralised
#   no_trim       metrics.jsonl keeps torn lines and lines past the resumed step
#                 (train/metrics_log.cpp)                                  mpi_fault_metrics
#   no_pad_mask   produce_hf's batched generation attends to the left padding
#                 (scripts/produce_hf.py)                                  mpi_produce_hf
#   pack_no_segments  block 0 ignores a packed sample's documents (src/model/eagle3.cpp)
#   pack_halo     a packed sample's halos run past their document's end (data/sharding.cpp)
#     these two: the packed verify-usp runs (mpi_usp_packed_*) and mpi_layouts_packed
#   pack_positions    positions do not restart per document (data/sharding.cpp): mpi_layouts_packed
#                 (data check); verify-usp cannot see it: RoPE scores depend on position
#                 differences only, which a per-document shift keeps, so losses stay equal
#   pack_reader   the shard reader ignores the manifest's segments (data/shard_reader.cpp)
#                                                                          mpi_layouts_packed
# usage: tests/mutations/run.sh [MUTATION ...]   (default: dp_sum no_accum_div)
# Exit 0 when every mutation was caught (its checks failed), 1 otherwise.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
py=$(cat "$src/.eaglet_python")
mutations=("$@")
[ ${#mutations[@]} = 0 ] && mutations=(dp_sum no_accum_div)
caught=0
for m in "${mutations[@]}"; do
  mkdir -p "$src/../.mutants"  # under the checkout's parent: ccache's base_dir (if set there) shares objects
  wt=$(mktemp -d "$src/../.mutants/eaglet-mutant-XXXX")
  git -C "$src" worktree add -q --detach "$wt" HEAD
  tests='mpi_train_equivalence|mpi_usp_dp2_u1r2_acc2_t3|mpi_usp_acc4_u1r1_t3|mpi_usp_dp2_u2r1_t3'
  case $m in
    no_watchdog) file=src/dist/watchdog.cpp tests=mpi_fault_stop
      sed -i 's|    if (silent_s >= limit)|    if (/* mutant */ false \&\& silent_s >= limit)|' "$wt/$file" ;;
    no_nan_scan) file=src/data/shard_reader.cpp tests=mpi_fault_nonfinite
      sed -i 's|      if (row >= 0) f.problem|      if (/* mutant */ false \&\& row >= 0) f.problem|' "$wt/$file" ;;
    no_bad_bound) file=src/train/trainer.cpp tests=mpi_fault_neutralised
      sed -i 's|  if (nothing \|\| too_bad) {|  if (/* mutant */ false) {|; s|    if (static_cast<double>(tally.bad) > max_bad) {|    if (/* mutant */ false) {|' "$wt/$file" ;;
    no_trim) file=src/train/metrics_log.cpp tests=mpi_fault_metrics
      sed -i 's|    if (dropped > 0) {|    if (/* mutant */ false) {|' "$wt/$file" ;;
    no_pad_mask) file=scripts/produce_hf.py tests=mpi_produce_hf
      sed -i 's|            mask\[row, width - n:\] = 1|            mask[row, :] = 1  # mutant|' "$wt/$file" ;;
    dp_sum) file=src/train/optimizer.cpp
      sed -i 's|if (dp_size > 1) buffer.div_(static_cast<double>(dp_size));|/* mutant: no ÷ D */|' "$wt/$file" ;;
    no_accum_div) file=src/train/step.cpp
      sed -i 's|ttt_.loss_weights.push_back(w / static_cast<double>(grad_accum_));|ttt_.loss_weights.push_back(w); /* mutant */|' "$wt/$file" ;;
    pack_no_segments) file=src/model/eagle3.cpp tests='mpi_usp_packed_|mpi_layouts_packed'
      sed -i 's|    block0 = attention::segmented_block0(block0, shard.segments);|    (void)0;  // mutant|' "$wt/$file" ;;
    pack_halo) file=src/data/sharding.cpp tests='mpi_usp_packed_|mpi_layouts_packed'
      sed -i 's|    const int64_t keep = end >= L ? T : std::clamp(end - q, int64_t{0}, T);|    const int64_t keep = T;  // mutant|' "$wt/$file" ;;
    pack_positions) file=src/data/sharding.cpp tests=mpi_layouts_packed
      sed -i 's|    for (size_t j = start; j < end; ++j) pos\[j\] = static_cast<int64_t>(j - start);|    for (size_t j = start; j < end; ++j) pos[j] = static_cast<int64_t>(j);  // mutant|' "$wt/$file" ;;
    pack_reader) file=src/data/shard_reader.cpp tests=mpi_layouts_packed
      sed -i 's|  if (f.problem.kind == ProblemKind::none \&\& f.hs.defined() \&\& !f.record.entry.segments.empty()) {|  if (/* mutant */ false) {|' "$wt/$file" ;;
    *) echo "unknown mutation $m"; exit 2 ;;
  esac
  if ! grep -q mutant "$wt/$file"; then echo "mutation $m did not apply to $file"; exit 2; fi
  echo "=== mutation $m ($file) ==="
  (cd "$wt" && git diff --stat && EAGLET_PYTHON=$py EAGLET_NO_APT=1 scripts/build.sh \
      -DCMAKE_CXX_COMPILER_LAUNCHER="$(command -v ccache || true)" >"$wt/build.out" 2>&1) ||
    { tail -20 "$wt/build.out"; exit 2; }
  out=$(cd "$wt/build" && ctest -R "$tests" --output-on-failure 2>&1)
  echo "$out" | grep -E 'vs |step [0-9]+:|verify-usp: max|^FAIL|tests passed|Passed|Failed|\*\*\*'
  if echo "$out" | grep -q '100% tests passed'; then
    echo "mutation $m: NOT caught"
  else
    echo "mutation $m: caught"
    caught=$((caught + 1))
  fi
  git -C "$src" worktree remove --force "$wt"
done
[ $caught = ${#mutations[@]} ]
