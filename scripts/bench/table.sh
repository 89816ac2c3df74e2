#!/usr/bin/env bash
# Builds eaglet on a device machine and prints the performance table of docs/PERFORMANCE.md:
# one row per sequence length for the Qwen3-8B reference draft (configs/bench/qwen3-8b.yaml) on one
# GPU, with the card, the commit and the command. usage: scripts/bench/table.sh [SEQ ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
seqs=${*:-8192 16384 32768 65536}
EAGLET_NO_APT=1 scripts/build.sh >/tmp/eaglet_bench_build.log 2>&1 || { tail -30 /tmp/eaglet_bench_build.log; exit 1; }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "card: $card, commit: $commit"
echo "command: build/eaglet bench --config configs/bench/qwen3-8b.yaml --seq N --steps 3"
echo
echo "| tokens | ms/step | tokens/s | peak GiB | model TFLOP/step | est. MFU |"
echo "| --- | --- | --- | --- | --- | --- |"
for seq in $seqs; do
  line=$(timeout 600 build/eaglet bench --config configs/bench/qwen3-8b.yaml --set output_dir=/tmp/eaglet_bench \
    --seq "$seq" --steps 3 2>&1 | grep -E "^bench:|out of memory" | tail -1)
  if [[ $line == bench:* ]]; then
    echo "$line" | sed -E 's/^bench: seq ([0-9]+) .*: ([0-9.]+) ms\/step, ([0-9]+) tokens\/s, peak ([0-9.]+) GiB, ([0-9.]+) TFLOP\/step, MFU ([0-9.]+%)$/| \1 | \2 | \3 | \4 | \5 | \6 |/'
  else
    echo "| $seq | out of memory or failed | | | | |"
  fi
done
