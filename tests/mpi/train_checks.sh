#!/usr/bin/env bash
# Multi-rank training checks under real mpirun (CPU, fp32), on synthetic data in dir stores:
#   equivalence  every step's synced gradients (each tensor), losses and grad_norm of DP x SP x
#                accumulation layouts equal the single-rank run of as many samples per step
#                (fp32, 1e-5): (D2,P2), (D1,P2,acc2), (D2,P4) vs (D1,P1,acc2); (D4,P1) and
#                (D2,P1,acc2) vs (D1,P1,acc4)
#   resume       6 steps straight == 3 steps, stop, resume, 3 steps (model and optimizer bit for
#                bit); a 2-replica run resumed on 1 replica continues the same sample stream
#   faults       SIGTERM on one rank: a checkpoint and exit 0 on every rank; a process killed while
#                writing a checkpoint leaves the previous one loadable; a missing or incompatible
#                checkpoint and a bad config: clear error, exit 2 on every rank, no hang
#   follow       training follows a manifest a producer is still writing (data.follow)
#   lock         a second run on a busy output_dir exits 2 naming the holder; a killed holder's
#                lock is taken over with a warning
# usage: train_checks.sh equivalence|resume|faults|follow|lock EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
what=$1 eaglet=$2 mpirun=$3 py=$4 src=$5 out=$6/$1
rm -rf "$out" && mkdir -p "$out"
cfg=$src/configs/demo.yaml
cmp_ckpt="$py $src/tests/compare_checkpoints.py"
fail=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fail=1; fi; }
# A tiny model so every run takes seconds; warm-up off so the schedule does not depend on totals.
common=(--config "$cfg" --set runtime.device=cpu --set training.warmup_ratio=0 --set checkpoint.interval=0 --set data.eval_manifest=
        --set training.log_interval=1 --set data.max_seq_length=64 --set model.config.intermediate_size=64)

synth() {  # synth P STORE: the same 24 samples (seed 7), sharded for P
  "$eaglet" data synth "${common[@]}" --set parallel.ulysses=1 --set parallel.ring="$1" --set data.path="$2" \
    --set output_dir="$2.log" --samples 24 --seed 7 >/dev/null
}
train() {  # train NP U R ACCUM STORE RUN_DIR [extra --set ...]
  local np=$1 u=$2 r=$3 acc=$4 store=$5 run=$6
  shift 6
  timeout 300 "$mpirun" -np "$np" sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' "$eaglet" train \
    "${common[@]}" --set parallel.ulysses="$u" --set parallel.ring="$r" --set training.grad_accum="$acc" \
    --set data.path="$store" --set model.target="$store/target" --set output_dir="$run" "$@" >"$run.log" 2>&1
  echo $?
}
all_exit() {  # all_exit LOG NP CODE: every rank printed EXIT with CODE
  [ "$(grep -c "^EXIT rank=[0-9]* code=$3$" "$1")" = "$2" ]
}

case $what in
equivalence)
  # Gradients, not weights: AdamW and clipping are blind to a uniform gradient scale, so a wrong
  # ÷D over replicas, a missing ÷grad_accum or SUM for AVG would leave the weights unchanged. Each
  # run dumps every step's synced pre-clip gradients (--dump-grads); runs that see the same
  # samples per step (D x grad_accum equal) must agree on every gradient tensor, loss, loss_ttt
  # and grad_norm, fp32, tolerance 1e-5 (tests/compare_dumps.py). lr 1e-8 keeps the steps after
  # the first comparable: Adam turns round-off in near-zero gradient entries into updates of up
  # to lr whatever the gradient's size.
  common+=(--set training.lr=1e-8)
  for p in 1 2 4; do synth $p "$out/store_p$p"; done
  dump() { local run=$1; shift; train "$@" "$out/$run" --set training.max_steps=3 --dump-grads "$out/$run/grads" >/dev/null; }
  dump ref_acc2 1 1 1 2 "$out/store_p1"     # D 1, P 1, accum 2: the single-rank truth of 2 samples
  dump ref_acc4 1 1 1 4 "$out/store_p1"     # D 1, P 1, accum 4: ... of 4 samples
  dump dp2_sp2 4 2 1 1 "$out/store_p2"      # D 2, P 2 (U 2)
  dump dp1_sp2_acc2 2 1 2 2 "$out/store_p2" # D 1, P 2 (R 2), accum 2
  dump dp2_sp4 8 2 2 1 "$out/store_p4"      # D 2, P 4 (U 2 x R 2)
  dump dp4_sp1 4 1 1 1 "$out/store_p1"      # D 4, P 1
  dump dp2_sp1_acc2 2 1 1 2 "$out/store_p1" # D 2, P 1, accum 2
  for pair in "dp2_sp2 ref_acc2" "dp1_sp2_acc2 ref_acc2" "dp2_sp4 ref_acc2" "dp4_sp1 ref_acc4" \
              "dp2_sp1_acc2 ref_acc4"; do
    set -- $pair
    echo "$1 vs $2:"
    check $py "$src/tests/compare_dumps.py" "$out/$1" "$out/$2" --tol 1e-5
  done
  ;;
resume)
  synth 2 "$out/store"
  train 2 2 1 1 "$out/store" "$out/straight" --set training.max_steps=6 >/dev/null
  train 2 2 1 1 "$out/store" "$out/split" --set training.max_steps=6 --set training.stop_after=3 >/dev/null
  check all_exit "$out/split.log" 2 0
  check test -d "$out/split/checkpoints/step_00000003"
  train 2 2 1 1 "$out/store" "$out/split" --set training.max_steps=6 --resume auto >/dev/null
  check grep -q "resumed from .*step_00000003: step 3" "$out/split.log"
  for f in model.safetensors optimizer.safetensors; do
    check $cmp_ckpt "$out/straight/checkpoints/step_00000006/$f" "$out/split/checkpoints/step_00000006/$f" --exact
  done
  # export from the run folder resolves the latest checkpoint (step 6)
  "$eaglet" export --checkpoint "$out/split" --out "$out/export" >"$out/export.log" 2>&1
  check grep -q "exported $out/split/checkpoints/step_00000006 to $out/export" "$out/export.log"
  # 2 data-parallel replicas (P = 1) for 2 steps, then 1 replica: the stream cursor continues.
  synth 1 "$out/store1"
  train 2 1 1 1 "$out/store1" "$out/dp" --set training.max_steps=6 --set training.stop_after=2 >/dev/null
  train 1 1 1 1 "$out/store1" "$out/dp" --set training.max_steps=6 --resume auto >/dev/null
  cursors=$(grep -o '"cursor":[0-9]*' "$out/dp/metrics.jsonl" | cut -d: -f2 | tr '\n' ' ')
  echo "     cursors after each step (2 replicas, then 1): $cursors"
  check test "$cursors" = "2 4 5 6 7 8 "
  ;;
faults)
  synth 2 "$out/store"
  # SIGTERM to one rank process mid-run.
  "$mpirun" -np 2 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' "$eaglet" train "${common[@]}" \
    --set parallel.ulysses=2 --set parallel.ring=1 --set data.path="$out/store" --set model.target="$out/store/target" \
    --set output_dir="$out/term" --set training.num_epochs=100 >"$out/term.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do grep -q '"step":5,' "$out/term/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
  victim=$(pgrep -f "$eaglet train .*$out/term" | grep -v "^$job$" | tail -1)
  kill -TERM "$victim"
  timeout 120 tail --pid=$job -f /dev/null
  check all_exit "$out/term.log" 2 0
  check grep -q "pre-emption signal received" "$out/term.log"
  check test -f "$out/term/checkpoints/latest"
  # Killed while writing the checkpoint of step 4: step 2's stays the latest and resumes.
  EAGLET_TEST_KILL_IN_CHECKPOINT=4 train 2 2 1 1 "$out/store" "$out/torn" --set training.max_steps=6 \
    --set checkpoint.interval=2 >/dev/null
  check test "$(cat "$out/torn/checkpoints/latest")" = step_00000002
  train 2 2 1 1 "$out/store" "$out/torn" --set training.max_steps=6 --resume auto >/dev/null
  check grep -q "resumed from .*step_00000002: step 2" "$out/torn.log"
  check test -d "$out/torn/checkpoints/step_00000006"
  # Missing checkpoint, incompatible checkpoint, bad config: exit 2 everywhere, the message once.
  train 2 2 1 1 "$out/store" "$out/x" --resume "$out/nope" >/dev/null
  check all_exit "$out/x.log" 2 2
  check grep -q -- "--resume $out/nope: no such checkpoint folder" "$out/x.log"
  train 2 2 1 1 "$out/store" "$out/torn" --resume auto --set model.config.intermediate_size=96 >/dev/null
  check all_exit "$out/torn.log" 2 2
  check grep -q "is for another model: intermediate_size is 64 there and 96 in this run" "$out/torn.log"
  train 2 2 1 1 "$out/store" "$out/y" --set training.lr=-1 >/dev/null
  check all_exit "$out/y.log" 2 2
  check grep -q "config error: training.lr=-1: must be > 0" "$out/y.log"
  train 2 2 1 1 "$out/store" "$out/z" --set model.target="$out/none" >/dev/null
  check all_exit "$out/z.log" 2 2
  ;;
lock)
  # One run per output_dir: a second run on the folder exits 2 on every rank naming the holder and
  # writes nothing there; once the holder is killed (SIGKILL: no clean-up) its lock is taken over.
  synth 2 "$out/store"
  "$mpirun" -np 2 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' "$eaglet" train "${common[@]}" \
    --set parallel.ulysses=2 --set parallel.ring=1 --set data.path="$out/store" --set model.target="$out/store/target" \
    --set output_dir="$out/run" --set training.num_epochs=100 --set checkpoint.interval=2 >"$out/first.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do grep -q '"step":3,' "$out/run/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
  check test -f "$out/run/eaglet.lock"
  cp "$out/run/config.yaml" "$out/config.first"
  train 2 2 1 1 "$out/store" "$out/run" --set training.lr=5e-4 >/dev/null
  check all_exit "$out/run.log" 2 2
  check grep -q "output_dir $out/run is in use by eaglet train (pid [0-9]* on host" "$out/run.log"
  check cmp -s "$out/run/config.yaml" "$out/config.first"  # the second run wrote nothing there
  pkill -KILL -f "$eaglet train .*output_dir=$out/run"; wait $job 2>/dev/null
  for _ in $(seq 100); do pgrep -f "$eaglet train .*output_dir=$out/run" >/dev/null || break; sleep 0.1; done
  check test -f "$out/run/eaglet.lock"  # left behind by the killed run
  train 2 2 1 1 "$out/store" "$out/run" --set training.max_steps=6 --resume auto >/dev/null
  check all_exit "$out/run.log" 2 0
  check grep -q "taking over the lock of eaglet train (pid" "$out/run.log"
  check test ! -e "$out/run/eaglet.lock"  # released at the end
  ;;
follow)
  # Training starts on an empty store while a producer is still writing (data.follow): the target
  # folder comes first, then samples one by one; the trainer waits for each and finishes 6 steps.
  mkdir -p "$out/store"
  "$eaglet" data synth "${common[@]}" --set parallel.ulysses=2 --set parallel.ring=1 --set data.path="$out/scratch" \
    --set output_dir="$out/scratch.log" --samples 1 --seed 7 --target "$out/store/target" >/dev/null  # the target
  # An empty manifest has nothing to count a draft vocabulary from: that is a clear error ...
  train 2 2 1 1 "$out/store" "$out/novocab" --set data.follow=true --set training.max_steps=6 >/dev/null
  check all_exit "$out/novocab.log" 2 2
  check grep -q "no sample to count the draft vocabulary from yet" "$out/novocab.log"
  (sleep 2; "$eaglet" data synth "${common[@]}" --set parallel.ulysses=2 --set parallel.ring=1 \
     --set data.path="$out/store" --set output_dir="$out/store.log" --samples 8 --seed 7 \
     --target "$out/target2" >/dev/null) &
  # ... so this run uses the whole vocabulary (t2d = all).
  train 2 2 1 1 "$out/store" "$out/run" --set data.follow=true --set training.max_steps=6 \
    --set data.manifest_wait_s=60 --set model.config.draft_vocab_size=256 >/dev/null
  wait
  check all_exit "$out/run.log" 2 0
  check grep -q '"step":6,' "$out/run/metrics.jsonl"
  check grep -q "(following)" "$out/run.log"
  ;;
esac
[ $fail = 0 ] && echo "train_checks $what: PASS" || echo "train_checks $what: FAIL"
exit $fail
