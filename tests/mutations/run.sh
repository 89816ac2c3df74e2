#!/usr/bin/env bash
# Shows that the equivalence checks catch the bug class they exist for: builds eaglet with one
# deliberate normalisation bug in a scratch worktree of HEAD and runs the gradient-level checks,
# which must FAIL. Not part of CI (it builds eaglet once per mutation; ccache makes that the one
# changed file). Mutations:
#   dp_sum        the gradient sync sums over data-parallel replicas instead of averaging
#                 (src/train/optimizer.cpp: the ÷ D removed)
#   no_accum_div  the step weights are not divided by training.grad_accum
#                 (src/train/step.cpp: w_k instead of w_k / grad_accum)
# usage: tests/mutations/run.sh [dp_sum|no_accum_div ...]   (default: both)
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
  case $m in
    dp_sum) file=src/train/optimizer.cpp
      sed -i 's|if (dp_size > 1) buffer.div_(static_cast<double>(dp_size));|/* mutant: no ÷ D */|' "$wt/$file" ;;
    no_accum_div) file=src/train/step.cpp
      sed -i 's|ttt_.loss_weights.push_back(w / static_cast<double>(grad_accum_));|ttt_.loss_weights.push_back(w); /* mutant */|' "$wt/$file" ;;
    *) echo "unknown mutation $m"; exit 2 ;;
  esac
  if ! grep -q mutant "$wt/$file"; then echo "mutation $m did not apply to $file"; exit 2; fi
  echo "=== mutation $m ($file) ==="
  (cd "$wt" && git diff --stat && EAGLET_PYTHON=$py EAGLET_NO_APT=1 scripts/build.sh \
      -DCMAKE_CXX_COMPILER_LAUNCHER="$(command -v ccache || true)" >"$wt/build.out" 2>&1) ||
    { tail -20 "$wt/build.out"; exit 2; }
  out=$(cd "$wt/build" && ctest -R 'mpi_train_equivalence|mpi_usp_dp2_u1r2_acc2_t3|mpi_usp_acc4_u1r1_t3|mpi_usp_dp2_u2r1_t3' \
          --output-on-failure 2>&1)
  echo "$out" | grep -E 'vs |step [0-9]+:|verify-usp: max|tests passed|Passed|Failed|\*\*\*'
  if echo "$out" | grep -q '100% tests passed'; then
    echo "mutation $m: NOT caught"
  else
    echo "mutation $m: caught"
    caught=$((caught + 1))
  fi
  git -C "$src" worktree remove --force "$wt"
done
[ $caught = ${#mutations[@]} ]
