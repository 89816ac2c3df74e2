#!/usr/bin/env bash
# The README's demo command: set-up, build, then the 4-rank (Ulysses 2 x Ring 2) CPU job of
# configs/demo.yaml. Today the job is the topology self-check; later it grows into synthetic data ->
# training -> interruption -> resume -> export.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
out=runs/demo
echo
echo "== eaglet topo on 4 ranks (U x R = 2 x 2), CPU over MPI =="
scripts/mpirun.sh -np 4 build/eaglet topo --config configs/demo.yaml --set output_dir=$out
echo
echo "demo done: effective config $out/config.yaml, per-rank logs $out/logs/"
