#!/usr/bin/env bash
# GPU: every collective through NCCL, one rank per GPU, for each U x R that fits the visible GPUs.
# Exits 77 (skipped) on a machine without GPUs.
# usage: topo_gpu.sh EAGLET MPIRUN BASE_CONFIG OUT_DIR
set -uo pipefail
eaglet=$1 mpirun=$2 base=$3 out=$4
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" = 0 ]; then
  echo "no GPU visible: skipped"
  exit 77
fi
mkdir -p "$out"
failures=0
for np in 1 2 4 8; do
  [ "$np" -le "$gpus" ] || continue
  for layout in 1x1 2x1 1x2 2x2 4x2 2x4 4x1 1x4; do
    u=${layout%x*} r=${layout#*x}
    [ $((np % (u * r))) = 0 ] || continue
    name="np${np}_u${u}r${r}"
    timeout 300 "$mpirun" -np "$np" "$eaglet" topo --config "$base" --set runtime.device=cuda \
      --set parallel.ulysses="$u" --set parallel.ring="$r" --set output_dir="$out/$name" >"$out/$name.log" 2>&1
    if grep -q "0 failed: PASS" "$out/$name.log"; then
      echo "ok   $name: $(grep -o "topo: .*" "$out/$name.log" | tail -1)"
    else
      failures=$((failures + 1))
      echo "FAIL $name"
      cat "$out/$name.log"
    fi
  done
done
[ "$failures" = 0 ]
