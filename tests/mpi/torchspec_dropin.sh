#!/usr/bin/env bash
# TorchSpec/SGLang output trains unchanged (ctest mpi_torchspec_dropin_dir / _mooncake, issue 21):
# tests/python/torchspec_writer.py writes samples as TorchSpec's producers do — keys
# `ultrachat.v2/conv:<i>_<uuid8>` ('.', '/', ':'), put_usp_shards objects under
# TORCHSPEC_USP_SHARDED_MOONCAKE=1 (layout in TORCHSPEC_USP_*), the non-USP producer's full-length
# `{key}_hs|_ids|_lhs` otherwise, no manifest, only TorchSpec's metadata records — for data with 2
# and with 4 aux layers. `eaglet data ingest` turns the records into a manifest (a second ingest
# adds nothing); then on 4 ranks (U2 x R2):
#   * `eaglet data check --reference`: every rank's rows bit for bit against the full samples;
#   * 3 training steps with model.config.num_aux_hidden_states = the data's; the sharded and the
#     unsharded copy of the same samples give equal losses (tolerance 0: same bytes, same maths).
# STORE mooncake: a real mooncake_master on 127.0.0.1 (exit 77, skipped, without the wheel), and
# then the master is SIGKILLed mid-run under data.on_error=fail and =skip: each run must end within
# a minute with "store unavailable" (naming the key, the rank and the master), a non-zero exit, no
# rank left running and no sample neutralised.
# STORE dir: eaglet's dir store (escaped file names); no master to kill.
# usage: torchspec_dropin.sh dir|mooncake EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
store=$1 eaglet=$2 mpirun=$3 python=$4 src=$5 out=$6/$1
if [ "$store" = mooncake ] && ! timeout 60 "$python" -c "import mooncake.store" >/dev/null 2>&1; then
  echo "SKIP: $python cannot import mooncake.store (pip install mooncake-transfer-engine-non-cuda)"
  exit 77
fi
rm -rf "$out" && mkdir -p "$out"
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
check() { if "$@"; then ok "$*"; else bad "$*"; fi; }
mc_set=()
[ "$store" = mooncake ] && { . "$src/tests/mpi/mooncake_lib.sh"; mc_start master; }

common=(--config "$src/configs/demo.yaml" --set runtime.device=cpu --set runtime.threads=1
        --set parallel.ulysses=2 --set parallel.ring=2 --set training.warmup_ratio=0
        --set checkpoint.interval=0 --set data.eval_manifest= --set training.log_interval=1
        --set data.max_seq_length=64 --set model.config.intermediate_size=64 --set training.lr=1e-3)
# As TorchSpec's SglEngine exports them for SGLang's writer (P = U*R = 4, ring 2, T = 3).
export TORCHSPEC_USP_SP_SIZE=4 TORCHSPEC_USP_RING_SIZE=2 TORCHSPEC_USP_TTT_LENGTH=3 \
  TORCHSPEC_USP_MAX_SEQ_LENGTH=64
run() {  # run LOG eaglet-args...: 4 ranks; every rank's exit code as "EXIT rank=R code=C" lines
  local log=$1
  shift
  timeout 300 "$mpirun" -np 4 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" "$@" >"$log" 2>&1
}
all_exit() { [ "$(grep -c "^EXIT rank=[0-9]* code=$2$" "$1")" = 4 ]; }
sink() {  # the writer's sink options for data set $1
  if [ "$store" = mooncake ]; then echo --master "127.0.0.1:$port" --metadata "http://127.0.0.1:$((port + 1))/metadata"
  else echo --dir "$out/$1"; fi
}
write() {  # write NAME AUX KIND: TorchSpec-style objects + records, then eaglet data ingest
  local name=$1 aux=$2 kind=$3 flag=0
  [ "$kind" = sharded ] && flag=1
  mkdir -p "$out/$name"
  TORCHSPEC_USP_SHARDED_MOONCAKE=$flag timeout 120 "$python" "$src/tests/python/torchspec_writer.py" \
    --from "$out/full$aux" --records "$out/$name.records.jsonl" --reference "$out/ref_$name" \
    $(sink "$name") >"$out/$name.writer.log" 2>&1 || { bad "$name: writer"; tail -5 "$out/$name.writer.log"; }
  TORCHSPEC_USP_SHARDED_MOONCAKE=$flag "$eaglet" data ingest --records "$out/$name.records.jsonl" \
    --out "$out/$name/manifest.jsonl" --aux-layer-ids "$(seq -s, 1 "$aux")" >"$out/$name.ingest.log" 2>&1
}
data_set() { echo --set "data.path=$out/$1" "${mc_set[@]}"; }

for aux in 2 4; do
  # Full samples (any eaglet store will do for synth; only --save-full and the target are used).
  "$eaglet" data synth "${common[@]}" --set "data.path=$out/synth$aux" --samples 8 --seed 5 \
    --num-aux $aux --save-full "$out/full$aux" >"$out/synth$aux.log" 2>&1
  check grep -q "8 samples" "$out/synth$aux.log"
  for kind in sharded unsharded; do
    name=aux${aux}_$kind
    write $name $aux $kind
    want="8 new manifest lines in $out/$name/manifest.jsonl ($([ $kind = sharded ] && echo "8 pre-sharded for P=4 T=3 max_seq_length=64, 0 unsharded" || echo "0 pre-sharded for P=4 T=3 max_seq_length=64, 8 unsharded"); 0 already there); num_aux $aux, hidden_size 64"
    grep -qF "$want" "$out/$name.ingest.log" && ok "$name: ingest" ||
      { bad "$name: ingest"; cat "$out/$name.ingest.log"; }
    "$eaglet" data ingest --records "$out/$name.records.jsonl" --out "$out/$name/manifest.jsonl" \
      >"$out/$name.reingest.log" 2>&1
    check grep -qF "8 records -> 0 new manifest lines" "$out/$name.reingest.log"
    check grep -q '"key":"ultrachat.v2/conv:7_[0-9a-f]\{8\}"' "$out/$name/manifest.jsonl"
    if [ "$store" = dir ]; then
      check test -n "$(ls "$out/$name" | grep -E "^ultrachat%2Ev2%2Fconv%3A7_[0-9a-f]{8}_$([ $kind = sharded ] && echo usp3_)lhs$")"
    fi
    # shellcheck disable=SC2046
    run "$out/$name.check.log" data check "${common[@]}" $(data_set $name) \
      --set model.config.num_aux_hidden_states=$aux --reference "$out/ref_$name"
    all_exit "$out/$name.check.log" 0 &&
      grep -q "8 samples read by 1 replicas x 4 SP ranks.*0 mismatches against $out/ref_$name: PASS" "$out/$name.check.log" &&
      ok "$name: data check bit for bit" || { bad "$name: data check"; grep -v '^EXIT' "$out/$name.check.log" | tail -8; }
    # shellcheck disable=SC2046
    run "$out/$name.train.log" train "${common[@]}" $(data_set $name) \
      --set model.config.num_aux_hidden_states=$aux --set "model.target=$out/synth$aux/target" \
      --set "output_dir=$out/run_$name" --set training.max_steps=3
    all_exit "$out/$name.train.log" 0 && ok "$name: 3 training steps" ||
      { bad "$name: train"; grep -v '^EXIT' "$out/$name.train.log" | tail -8; }
  done
  check "$python" - "$out/run_aux${aux}_sharded/metrics.jsonl" "$out/run_aux${aux}_unsharded/metrics.jsonl" <<'PY'
import json, math, sys
a, b = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:])
assert len(a) == len(b) == 3, (len(a), len(b))
for x, y in zip(a, b):
    assert math.isfinite(x["loss"]) and x["loss"] > 0, x
    assert x["step"] == y["step"] and x["loss"] == y["loss"] and x["loss_ttt"] == y["loss_ttt"], (x, y)
    print("step", x["step"], "loss", x["loss"], "== unsharded", y["loss"])
PY
done
# The export names the aux layers the data were captured with (from the manifest).
if "$eaglet" export --checkpoint "$out/run_aux4_sharded" --out "$out/export4" --no-embeddings >"$out/export4.log" 2>&1; then
  check "$python" -c "
import json, sys
c = json.load(open(sys.argv[1]))
assert c['eagle_config']['eagle_aux_hidden_state_layer_ids'] == [1, 2, 3, 4], c
assert c['eagle_aux_hidden_state_layer_ids'] == [1, 2, 3, 4], c
" "$out/export4/config.json"
else
  bad "export"; tail -5 "$out/export4.log"
fi

if [ "$store" = mooncake ]; then
  # The master dies mid-run: a store outage, never a bad sample, under both on_error settings.
  for mode in fail skip; do
    name=outage_$mode
    mc_start $name
    write $name 2 sharded
    # shellcheck disable=SC2046
    (timeout 300 "$mpirun" -np 4 "$eaglet" train "${common[@]}" $(data_set $name) \
       --set model.config.num_aux_hidden_states=2 --set "model.target=$out/synth2/target" \
       --set "output_dir=$out/run_$name" --set data.on_error=$mode --set training.num_epochs=1000 \
       >"$out/$name.train.log" 2>&1; echo $? >"$out/$name.rc") &
    job=$!
    for _ in $(seq 900); do
      grep -q '"step":3,' "$out/run_$name/metrics.jsonl" 2>/dev/null && break
      sleep 0.1
    done
    grep -q '"step":3,' "$out/run_$name/metrics.jsonl" 2>/dev/null || bad "$name: no step 3"
    kill -KILL "$(cat "$mc/master.pid")"
    killed=$(date +%s)
    wait $job
    took=$(($(date +%s) - killed))
    log=$out/$name.train.log rc=$(cat "$out/$name.rc")
    if [ "$rc" = 124 ]; then bad "$name: the run hung (killed by timeout)"
    elif [ "$rc" = 0 ]; then bad "$name: exit 0 after the master died"
    else ok "$name: exit $rc, $took s after the master was killed"; fi
    pgrep -f "output_dir=$out/run_$name( |$)" >/dev/null && bad "$name: a rank is still running"
    [ "$took" -le 60 ] || bad "$name: took $took s to stop"
    grep -q "store unavailable: .* of key ultrachat.v2/conv:[0-9]*_[0-9a-f]\{8\}_usp[0-3]_[a-z]* failed .* on rank [0-9]" "$log" &&
      grep -q "127.0.0.1:$port" "$log" && ok "$name: the message names the outage, the key, the rank and the master" ||
      { bad "$name: no clear outage message"; grep -v '^[IWE][0-9]\{4\} ' "$log" | tail -12; }
    grep -q "neutralised" "$log" && bad "$name: a sample was neutralised (the outage taken for bad data)"
  done
fi

[ $fail = 0 ] && echo "torchspec_dropin ($store): PASS" || echo "torchspec_dropin ($store): FAIL"
[ $fail = 0 ]
