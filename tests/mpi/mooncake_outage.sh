#!/usr/bin/env bash
# Store outages are not data errors (ctest mpi_mooncake_outage): a real Mooncake master on
# loopback (scripts/mooncake_master.sh), eaglet data synth writing into it, 2 ranks training
# (U = 2) that see the master SIGKILLed mid-run. Under data.on_error=fail and =skip alike the run
# must end within seconds with "store unavailable" naming the master, the key and the rank, a
# non-zero exit and no rank left running (never a hang, never a run that skips its way through).
# Then a data.consume=true run removes every sample and a rerun on the same manifest is told the
# objects are "not in the mooncake store (consumed by an earlier run with data.consume=true, or
# never written)", with no "-1 bytes"; the consume=false rerun also logs the start-up warning
# that the store fills. Each master is stopped by its pid (trap) on every exit path.
# Exit 77 (skip) when PYTHON lacks the mooncake wheel.
# usage: mooncake_outage.sh EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
eaglet=$1 mpirun=$2 python=$3 src=$4 out=$5
if ! timeout 60 "$python" -c "import mooncake.store" >/dev/null 2>&1; then
  echo "SKIP: $python cannot import mooncake.store (pip install mooncake-transfer-engine-non-cuda)"
  exit 77
fi
rm -rf "$out" && mkdir -p "$out"
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
. "$src/tests/mpi/mooncake_lib.sh"
start_master() {  # start_master NAME: a fresh master + memory holder; sets mc, port, S
  mc_start "$1"
  S=(--config "$src/configs/demo.yaml" --set runtime.device=cpu --set runtime.threads=1
     --set parallel.ulysses=2 --set parallel.ring=1 --set training.warmup_ratio=0
     --set checkpoint.interval=0 --set data.eval_manifest= --set training.log_interval=1
     --set data.max_seq_length=64 --set model.config.intermediate_size=64
     "${mc_set[@]}" --set "data.path=$out/$1.store" --set "model.target=$out/$1.store/target")
}
synth() {  # synth NAME SAMPLES
  timeout 120 "$eaglet" data synth "${S[@]}" --set "output_dir=$out/$1.synth" --samples "$2" \
    --seed 7 >"$out/$1.synth.log" 2>&1 || { bad "$1: synth"; tail -5 "$out/$1.synth.log"; exit 1; }
}
train() {  # train NAME RUN [extra ...]: mpirun's exit code on stdout, output in RUN.log
  local run=$out/$2
  shift 2
  timeout 150 "$mpirun" -np 2 "$eaglet" train "${S[@]}" --set "output_dir=$run" "$@" \
    >"$run.log" 2>&1
  echo $?
}
left_running() { pgrep -f "output_dir=$out/$1( |$)" >/dev/null; }

for mode in fail skip; do
  name=outage_$mode
  start_master $name
  synth $name 24
  (train $name $name.run --set data.on_error=$mode --set training.num_epochs=1000 \
     >"$out/$name.rc") &
  job=$!
  for _ in $(seq 900); do
    grep -q '"step":3,' "$out/$name.run/metrics.jsonl" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '"step":3,' "$out/$name.run/metrics.jsonl" 2>/dev/null || bad "$name: no step 3"
  master_pid=$(cat "$mc/master.pid")
  kill -KILL "$master_pid"
  killed=$(date +%s)
  wait $job
  took=$(($(date +%s) - killed))
  rc=$(cat "$out/$name.rc")
  log=$out/$name.run.log
  if [ "$rc" = 124 ]; then bad "$name: the run hung (killed by timeout)";
  elif [ "$rc" = 0 ]; then bad "$name: exit 0 after the master died";
  else ok "$name: exit $rc, $took s after the master was killed"; fi
  [ "$took" -le 60 ] || bad "$name: took $took s to stop"
  grep -q "store unavailable" "$log" && grep -q "127.0.0.1:$port" "$log" &&
    grep -q "store unavailable: .* of key [A-Za-z0-9_-]* failed .* on rank [0-9]" "$log" &&
    ok "$name: message names the outage, the key, the rank and the master" ||
    { bad "$name: no clear outage message"; grep -v '^[IWE][0-9]\{4\} ' "$log" | tail -15; }
  grep -q "retrying in" "$log" && ok "$name: retries logged" || bad "$name: no retry logged"
  grep -q "neutralised" "$log" && bad "$name: a sample was neutralised (outage taken for bad data)"
  left_running $name.run && bad "$name: a rank is still running"
done

# Consumed objects: a data.consume=true run reads (and removes) every sample once; a rerun on
# the same manifest must say they are gone, not "has -1 bytes".
start_master consumed
synth consumed 8
rc=$(train consumed consume.run --set data.consume=true --set training.num_epochs=1 \
     --set training.max_steps=4)
[ "$rc" = 0 ] && ok "consume run" || { bad "consume run: exit $rc"; tail -15 "$out/consume.run.log"; }
rc=$(train consumed rerun.run --set data.consume=false --set training.num_epochs=1)
log=$out/rerun.run.log
[ "$rc" != 0 ] && [ "$rc" != 124 ] && ok "rerun after consume fails (exit $rc)" || bad "rerun: exit $rc"
grep -q "is not in the mooncake store (consumed by an earlier run with data.consume=true, or never written)" "$log" &&
  ok "rerun: says the objects were consumed or never written" ||
  { bad "rerun: no consumed-object message"; grep -v '^[IWE][0-9]\{4\} ' "$log" | tail -15; }
grep -q -- "-1 bytes" "$log" && bad "rerun: the message still says -1 bytes"
grep -q "data.consume=false: samples stay in the store" "$log" &&
  ok "rerun: start-up warning that the store fills" || bad "rerun: no data.consume warning"

[ $fail = 0 ] && echo "mooncake_outage: PASS" || echo "mooncake_outage: FAIL"
[ $fail = 0 ]
