#!/usr/bin/env bash
# Checkpoint crash safety under real mpirun (2 CPU ranks, U = 2, synthetic data, a tiny model):
#   kills    rank 0 SIGKILLed at each point of a checkpoint save (EAGLET_TEST_KILL_IN_CHECKPOINT=
#            <step>:<point>, train/checkpoint.cpp lists the points): a new step, a step saved again
#            (swapped in place), and a step saved again without RENAME_EXCHANGE (the fall-back
#            through a hard-linked copy). After each kill `latest` names a complete checkpoint that
#            verifies (eaglet export resolves and verifies it); `--resume auto` then continues to
#            the end, and no temporary entry is left in checkpoints/ after that start.
#   damaged  200 weights of the latest checkpoint overwritten with 1e30: `--resume auto` exits 2 on
#            every rank naming the file and offering the newest intact checkpoint; resuming from
#            that one as offered works and saves the damaged step again.
# usage: checkpoint_faults.sh EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
eaglet=$1 mpirun=$2 py=$3 src=$4 out=$5
rm -rf "$out" && mkdir -p "$out"
fail=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fail=1; fi; }
common=(--config "$src/configs/demo.yaml" --set runtime.device=cpu --set training.warmup_ratio=0
        --set data.eval_manifest= --set training.log_interval=1 --set data.max_seq_length=64
        --set model.config.intermediate_size=64 --set parallel.ulysses=2 --set parallel.ring=1
        --set data.path="$out/store" --set model.target="$out/store/target" --set checkpoint.interval=2
        --set checkpoint.keep=2)
train() {  # train RUN_DIR [extra arguments...]; log in RUN_DIR.log
  local run=$1
  shift
  timeout 120 "$mpirun" -np 2 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' "$eaglet" train \
    "${common[@]}" --set output_dir="$run" "$@" >"$run.log" 2>&1
}
all_exit() { [ "$(grep -c "^EXIT rank=[0-9]* code=$3$" "$1")" = "$2" ]; }  # LOG NP CODE
killed() { grep -q "^EXIT rank=0 code=137$" "$1.log"; }                       # RUN: rank 0 SIGKILLed
latest_is() { [ "$(cat "$1/checkpoints/latest")" = "$2" ]; }                  # RUN NAME
has_temporaries() { ls -A "$1/checkpoints" | grep -qE '^\.step_.*\.tmp-|^latest\.tmp$'; }
no_temporaries() { ! has_temporaries "$1"; }
# `latest` names a complete checkpoint that verifies: export resolves it through resolve_resume.
latest_verifies() {
  local run=$1 name
  name=$(cat "$run/checkpoints/latest")
  rm -rf "$run.export"
  "$eaglet" export --checkpoint "$run" --out "$run.export" >"$run.export.log" 2>&1 &&
    grep -qF "exported $run/checkpoints/$name to" "$run.export.log"
}
start_removed() {  # RUN: the start-up clean-up named what it removed
  grep -q "removed $1/checkpoints/\.step_.*, left by an interrupted checkpoint save" "$1.log"
}
resumes_to_end() {  # RUN FROM_NAME STEP MAX_STEPS: --resume auto continues from FROM_NAME
  train "$1" --resume auto --set training.max_steps="$4"
  all_exit "$1.log" 2 0 && grep -q "resumed from $1/checkpoints/$2: step $3," "$1.log" &&
    test -d "$1/checkpoints/step_0000000$4" && latest_is "$1" "step_0000000$4"
}

"$eaglet" data synth "${common[@]}" --set output_dir="$out/store.log" --samples 24 --seed 7 >/dev/null
# A finished 6-step run (checkpoints 4 and 6; latest 6), the start of the re-save trials.
train "$out/base" --set training.max_steps=6
check all_exit "$out/base.log" 2 0
check latest_is "$out/base" step_00000006

echo "--- killed while saving a new step (4; step 2 is the previous checkpoint)"
for point_latest in half:step_00000002 written:step_00000002 placed:step_00000002 latest:step_00000004; do
  point=${point_latest%%:*} want=${point_latest#*:} run=$out/new_$point
  EAGLET_TEST_KILL_IN_CHECKPOINT=4:$point train "$run" --set training.max_steps=6
  check killed "$run"
  check latest_is "$run" "$want"
  check latest_verifies "$run"
  case $point in half | written) check has_temporaries "$run" ;; esac  # what the next start removes
  check resumes_to_end "$run" "$want" "${want: -1}" 6
  case $point in half | written) check start_removed "$run" ;; esac
  check no_temporaries "$run"
done

echo "--- killed while saving step 6 again (resumed from step 4; latest names step 6)"
for mode in swap:placed fallback:aside fallback:placed; do
  how=${mode%%:*} point=${mode#*:} run=$out/again_${how}_$point
  cp -a "$out/base" "$run"
  no_exchange=0
  [ "$how" = fallback ] && no_exchange=1
  EAGLET_TEST_NO_RENAME_EXCHANGE=$no_exchange EAGLET_TEST_KILL_IN_CHECKPOINT=6:$point \
    train "$run" --set training.max_steps=6 --resume "$run/checkpoints/step_00000004"
  check killed "$run"
  check has_temporaries "$run"  # the replaced folder (swap), the copy `latest` names (fall-back)
  if [ "$how" = swap ]; then
    check latest_is "$run" step_00000006
    from=step_00000006
  else
    from=$(cat "$run/checkpoints/latest")
    check grep -qE '^\.step_00000006\.tmp-[0-9]+\.link$' "$run/checkpoints/latest"
  fi
  check latest_verifies "$run"
  check resumes_to_end "$run" "$from" 6 8
  check start_removed "$run"
  check no_temporaries "$run"
done

echo "--- 200 weights of the latest checkpoint overwritten with 1e30"
run=$out/damaged
cp -a "$out/base" "$run"
$py - "$run/checkpoints/step_00000006/model.safetensors" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    header = struct.unpack("<Q", f.read(8))[0]
    f.seek(8 + header)
    f.write(struct.pack("<200f", *[1e30] * 200))
EOF
train "$run" --resume auto --set training.max_steps=6
check all_exit "$run.log" 2 2
check grep -qF "$run/checkpoints/latest names step_00000006, which cannot be resumed: checkpoint file $run/checkpoints/step_00000006/model.safetensors has checksum" "$run.log"
check grep -qF "The newest intact checkpoint is $run/checkpoints/step_00000004: continue from it with --resume $run/checkpoints/step_00000004" "$run.log"
check test "$(grep -c "cannot be resumed" "$run.log")" = 1  # rank 0 prints it once
mv "$run.log" "$run.refused.log"
train "$run" --resume "$run/checkpoints/step_00000004" --set training.max_steps=6  # as offered
check all_exit "$run.log" 2 0
check grep -q "resumed from $run/checkpoints/step_00000004: step 4," "$run.log"
check latest_verifies "$run"  # step 6 saved again over the damaged one
check no_temporaries "$run"

[ $fail = 0 ] && echo "checkpoint_faults: PASS" || echo "checkpoint_faults: FAIL"
exit $fail
