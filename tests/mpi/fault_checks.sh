#!/usr/bin/env bash
# Operational faults under real mpirun (CPU, 4 ranks, demo sizes), as an operator meets them:
#   stop        one rank SIGSTOPped mid-run: every live rank's watchdog names where it waits
#               (step, phase, collective, group) and the job exits 1 within runtime.timeout_s +
#               30 s, never hangs
#   nonfinite   a NaN (bf16 0x7FC0) in one sample's _hs object: named (key, object, row, rank);
#               data.on_error=fail exits 2 on every rank, skip neutralises it and the run passes;
#               an Inf in every other sample's _lhs exceeds data.max_bad_fraction: exit 1 with the
#               summary by cause
#   neutralised every sample without a loss token, or a P=4 store read at P=2 with on_error=skip:
#               the run trained on nothing, exit 1, no final checkpoint
#   metrics     a torn last line and lines past the resumed step are removed on resume (each
#               step once, every line valid JSON); a metrics file that cannot be written
#               (/dev/full) stops the run at its next checkpoint naming the file
# usage: fault_checks.sh stop|nonfinite|neutralised|metrics EAGLET MPIRUN PYTHON SOURCE_DIR OUT
# FAULT_ARGS: more --set options for every run, e.g. the GPU path on one GPU:
#   FAULT_ARGS="--set runtime.device=cuda --set runtime.collectives=host"
set -uo pipefail
what=$1 eaglet=$2 mpirun=$3 py=$4 src=$5 out=$6/$1
rm -rf "$out" && mkdir -p "$out"
fail=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fail=1; fi; }
common=(--config "$src/configs/demo.yaml" --set runtime.device=cpu --set training.warmup_ratio=0
        --set checkpoint.interval=0 --set data.eval_manifest= --set training.log_interval=1
        --set data.max_seq_length=64 --set model.config.intermediate_size=64 --set training.num_epochs=1)
synth() {  # synth U R STORE: 24 samples (seed 7) sharded for P = U x R
  "$eaglet" data synth "${common[@]}" --set parallel.ulysses="$1" --set parallel.ring="$2" \
    --set data.path="$3" --set output_dir="$3.log" --samples 24 --seed 7 >/dev/null
}
train() {  # train NP U R STORE RUN [extra ...]: mpirun's exit code on stdout, output in RUN.log
  local np=$1 u=$2 r=$3 store=$4 run=$5
  shift 5
  timeout 120 "$mpirun" -np "$np" sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" train "${common[@]}" --set parallel.ulysses="$u" --set parallel.ring="$r" \
    --set data.path="$store" --set model.target="$store/target" --set output_dir="$run" "$@" \
    >"$run.log" 2>&1
  echo $?
}
read -r -a more <<<"${FAULT_ARGS:-}"
common+=("${more[@]}")
all_exit() { [ "$(grep -c "^EXIT rank=[0-9]* code=$3$" "$1")" = "$2" ]; }
expect() {  # expect CODE NP U R STORE RUN [extra ...]: every rank exits with CODE
  local code=$1 np=$2 run=$6
  train "${@:2}" >/dev/null
  check all_exit "$run.log" "$np" "$code"
}
# poison FILE ROW ROW_WIDTH BYTES: overwrites element 0 of ROW of a bf16 object with BYTES
poison() { printf "$4" | dd of="$1" bs=1 seek=$(($2 * $3 * 2)) conv=notrunc status=none; }
equals() { [ "$1" = "$2" ]; }

case $what in
stop)
  synth 2 2 "$out/store"
  timeout=10
  (train 4 2 2 "$out/store" "$out/run" --set training.num_epochs=1000 \
     --set runtime.timeout_s=$timeout >"$out/rc") &
  job=$!
  for _ in $(seq 600); do grep -q '"step":3,' "$out/run/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
  victim=$(pgrep -f "^$eaglet train .*output_dir=$out/run" | tail -1)
  start=$(date +%s)
  kill -STOP "$victim"
  wait $job
  took=$(($(date +%s) - start))
  kill -KILL "$victim" 2>/dev/null
  echo "the job ended $took s after the SIGSTOP (runtime.timeout_s=$timeout)"
  check equals "$(cat "$out/rc")" 1
  check test $took -le $((timeout + 30))
  check grep -q "watchdog: rank [0-9]: no progress for [0-9]* s (runtime.timeout_s=$timeout)" "$out/run.log"
  check grep -Eq "at step [0-9]+, phase '[^']+'.*waiting in (all_to_all|all_reduce|send_recv|barrier).* on group [a-z]+ \(world ranks [0-9,]+\)" "$out/run.log"
  # Every live rank reports (3 of the 4; the stopped one may report once woken to be killed).
  check test "$(grep -c "watchdog: rank [0-9]: no progress" "$out/run.log")" -ge 3
  ;;
nonfinite)
  synth 2 1 "$out/store"
  width=$((3 * 64))  # _hs rows: num_aux x hidden_size
  cp -r "$out/store" "$out/clean"
  poison "$out/store/synth7_000005_usp1_hs" 3 $width '\xc0\x7f'  # a bf16 NaN in row 3
  # on_error=fail: the SP group's ranks stop together and the job is aborted (exit 1).
  check equals "$(train 2 2 1 "$out/store" "$out/fail")" 1
  check grep -q "sample synth7_000005 (manifest .*): object synth7_000005_usp1_hs holds a non-finite value (NaN or Inf) in row 3 of its [0-9]* rows (bfloat16 .*SP rank 1, world rank 1)" "$out/fail.log"
  expect 0 2 2 1 "$out/store" "$out/skip" --set data.on_error=skip
  check grep -q "data: neutralised (data.on_error=skip, 1 so far): sample synth7_000005" "$out/skip.log"
  check grep -q "this run: 24 samples, 1 bad (4.2%): 1 non-finite hidden state; 0 skipped" "$out/skip.log"
  # An Inf (0x7F80) in the _lhs of every other sample: 12 of 24 bad, far above 5%.
  for i in $(seq 0 2 22); do
    poison "$out/clean/$(printf 'synth7_%06d' $i)_usp0_lhs" 1 64 '\x80\x7f'
  done
  # It stops as soon as 5% of the run's 24 samples can no longer hold.
  expect 1 2 2 1 "$out/clean" "$out/half" --set data.on_error=skip
  check grep -q "this run had too many bad samples: [0-9]* samples, 2 bad (.*%): 2 non-finite hidden state; 0 skipped optimizer step(s) (data.max_bad_fraction 0.05)" "$out/half.log"
  check test ! -e "$out/half/checkpoints/latest"
  ;;
neutralised)
  synth 2 1 "$out/store"
  # No loss token anywhere: every loss-mask run-length says "all zeros".
  $py - "$out/store/manifest.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
lines = [json.loads(l) for l in open(path)]
for l in lines:
    l["packed_loss_mask"] = str(l["seq_len"])
open(path, "w").write("".join(json.dumps(l) + "\n" for l in lines))
PY
  expect 1 2 2 1 "$out/store" "$out/empty"
  # max_bad 0.05 x 24 samples: step 2 exceeds it; its counts are read back while step 3 runs
  # (the trainer reads each step's metrics once the next is queued), so the run stops after 3.
  check grep -q "this run trained on nothing: 3 samples, 3 bad (100.0%): 3 no loss token" "$out/empty.log"
  # Allowed to go on (max_bad_fraction 1), it still fails at the end: nothing was trained.
  expect 1 2 2 1 "$out/store" "$out/empty_all" --set data.max_bad_fraction=1
  check grep -q "this run trained on nothing: 24 samples, 24 bad (100.0%): 24 no loss token" "$out/empty_all.log"
  check test ! -e "$out/empty_all/checkpoints/latest"
  check test ! -e "$out/empty/checkpoints/latest"
  # A store sharded for P = 4 read at P = 2 with on_error=skip: every line refused.
  synth 2 2 "$out/p4"
  expect 1 2 2 1 "$out/p4" "$out/mismatch" --set data.on_error=skip
  check grep -q "this run trained on nothing: .*invalid manifest line" "$out/mismatch.log"
  ;;
metrics)
  synth 2 1 "$out/store"
  expect 0 2 2 1 "$out/store" "$out/run" --set training.max_steps=6 --set checkpoint.interval=3 \
    --set checkpoint.keep=5
  # As if the run had crashed after step 6's line while writing step 7's.
  printf '{"step":7,"loss":0.' >>"$out/run/metrics.jsonl"
  expect 0 2 2 1 "$out/store" "$out/run" --set training.max_steps=6 \
    --resume "$out/run/checkpoints/step_00000003"
  check grep -q "removed 4 line(s) that were torn or past step 3" "$out/run.log"
  check $py - "$out/run/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == [1, 2, 3, 4, 5, 6], steps
PY
  # Disk full: every write fails; the run stops at its first checkpoint naming the file.
  mkdir -p "$out/full"
  ln -s /dev/full "$out/full/metrics.jsonl"
  check equals "$(train 2 2 1 "$out/store" "$out/full" --set training.max_steps=6 \
    --set checkpoint.interval=2)" 1
  check grep -q "$out/full/metrics.jsonl: writing step 1 failed: No space left on device" "$out/full.log"
  check test ! -e "$out/full/checkpoints/latest"
  ;;
esac
[ $fail = 0 ] && echo "fault_checks $what: PASS" || echo "fault_checks $what: FAIL"
exit $fail
