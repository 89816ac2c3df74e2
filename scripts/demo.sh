#!/usr/bin/env bash
# The README's demo: set-up and build, then the main job end to end on the embedded (dir) store,
# on 4 CPU ranks with Ulysses 2 x Ring 2:
#   1. eaglet data synth   -> 48 learnable synthetic samples (8 held out), pre-sharded for P = 4
#   2. eaglet train        -> interrupted by SIGTERM on one rank (checkpoint, exit 0 everywhere)
#   3. eaglet train --resume auto -> continues to the end
#   4. eaglet export       -> a bf16 SGLang/vLLM Eagle3 folder
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${EAGLET_BIN:-}" ] || scripts/build.sh
out=runs/demo
rm -rf "$out"
mpirun=scripts/mpirun.sh
eaglet=${EAGLET_BIN:-build/eaglet}
cfg=configs/demo.yaml
step() { echo; echo "== $* =="; }

step "1/5 topology self-check on 4 ranks (U x R = 2 x 2)"
$mpirun -np 4 $eaglet topo --config $cfg 2>&1 | grep -E "groups|topo:"

step "2/5 synthetic data into the dir store ($out/store)"
$eaglet data synth --config $cfg --samples 48
# The last 8 samples are held out: evaluated every 100 steps, never trained on.
mv $out/store/manifest.jsonl $out/store/all.jsonl
head -n 40 $out/store/all.jsonl >$out/store/manifest.jsonl
tail -n 8 $out/store/all.jsonl >$out/store/eval.jsonl

step "3/5 training on 4 ranks; SIGTERM to one rank after step 150"
$mpirun -np 4 $eaglet train --config $cfg &
job=$!
while ! grep -q '"step":150' "$out/metrics.jsonl" 2>/dev/null; do
  kill -0 $job 2>/dev/null || { echo "training ended early"; wait $job; exit 1; }
  sleep 0.2
done
victim=$(pgrep -f "$eaglet train --config $cfg" | grep -v "^$job$" | tail -1)
echo "-- sending SIGTERM to rank process $victim"
kill -TERM "$victim"
wait $job && echo "-- every rank exited 0; checkpoint: $(cat $out/checkpoints/latest)"

step "4/5 resume from the latest checkpoint"
$mpirun -np 4 $eaglet train --config $cfg --resume auto

step "5/5 export to an SGLang / vLLM Eagle3 folder"
last=$out/checkpoints/$(cat $out/checkpoints/latest)
$eaglet export --checkpoint "$last" --out $out/export

echo
echo "demo done:"
echo "  samples + manifest + target: $out/store"
echo "  metrics:                     $out/metrics.jsonl (last: $(tail -1 $out/metrics.jsonl | cut -c1-160)...)"
echo "  checkpoints:                 $out/checkpoints ($(ls $out/checkpoints | grep step_ | tr '\n' ' '))"
echo "  exported draft:              $out/export ($(ls $out/export | tr '\n' ' '))"
echo "  logs:                        $out/logs/rank<N>.log"
