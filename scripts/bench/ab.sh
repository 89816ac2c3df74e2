#!/usr/bin/env bash
# Times a base tree against this one in one device run, so both sides see the same card and clocks:
# builds the base (with its own scripts/build.sh, into BASE/build) beside this tree, then runs
# `eaglet bench` on one GPU at each length of SEQS, alternating base and new ROUNDS times, and
# prints every run and each side's mean ms/step and peak GiB. Make the base tree here first:
#   mkdir -p .base && git archive BASE_COMMIT | tar -x -C .base   (.base is git-excluded)
# and carry it to the device machine (run's carry: [".base"]). BASE may name several trees
# (BASE=".base0 .base1": one lever per commit, each side against the next in one call).
# usage: [BASE=.base] [SEQS="8192"] [ROUNDS=2] [STEPS=6] scripts/bench/ab.sh [extra bench args]
set -uo pipefail
cd "$(dirname "$0")/../.."
bases=${BASE:-.base} seqs=${SEQS:-8192} rounds=${ROUNDS:-2} steps=${STEPS:-6}
for base in $bases; do
  [ -f "$base/CMakeLists.txt" ] || { echo "ab: no source tree at $base (see the header)"; exit 2; }
done
log=${OUT:-/tmp}/ab
mkdir -p "$log"
EAGLET_NO_APT=1 scripts/build.sh >"$log/build.log" 2>&1 &
pids=($!)
for base in $bases; do  # each base with its own recipe, all at once
  (cd "$base" && EAGLET_NO_APT=1 scripts/build.sh) >"$log/$(basename "$base")_build.log" 2>&1 &
  pids+=($!)
done
sides=(new $bases)
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" && continue
  echo "ab: the build of ${sides[$i]} failed:"
  [ "$i" = 0 ] && tail -30 "$log/build.log" || tail -30 "$log/$(basename "${sides[$i]}")_build.log"
  exit 1
done
echo "card: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
runs_file=$log/runs.txt
: >"$runs_file"
for seq in $seqs; do
  for round in $(seq "$rounds"); do
    for side in $bases new; do
      bin=build/eaglet
      [ $side = new ] || bin=$side/build/eaglet
      split=()  # no time split (an extra step) where the binary has it: older bases do not
      "$bin" bench --help 2>&1 | grep -q -- --no-split && split=(--no-split)
      line=$(timeout 300 "$bin" bench --config configs/bench/qwen3-8b.yaml --set output_dir="$log/run" \
        --seq "$seq" --steps "$steps" --no-floor "${split[@]}" "$@" 2>&1 | grep -E "^bench:|rror|out of memory" | tail -1)
      echo "$seq $side round $round: $line"
      ms=$(echo "$line" | sed -nE 's/.*: ([0-9.]+) ms\/step.*/\1/p')
      gib=$(echo "$line" | sed -nE 's/.*peak ([0-9.]+) GiB.*/\1/p')
      [ -n "$ms" ] && echo "$seq $side $ms ${gib:-?}" >>"$runs_file"
    done
  done
done
awk -v steps="$steps" '{ k = $1 " tokens, " $2; n[k]++; s[k] += $3; g[k] = $4; if (!(k in o)) o[k] = ++m; key[o[k]] = k }
  END { for (i = 1; i <= m; i++) { k = key[i]; printf "%s: %.1f ms/step (mean of %d runs x %d steps), peak %s GiB\n", k, s[k] / n[k], n[k], steps, g[k] } }' "$runs_file"
