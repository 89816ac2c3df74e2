#!/usr/bin/env bash
# Producer layouts eaglet reads (issue 21), under real mpirun on CPU (fp32):
#   unsharded  a store written unsharded (usp_sharded: false: {key}_hs|_ids|_lhs, full length)
#              reads bit for bit like the pre-sharded store of the same samples (data check
#              against the full samples at U1 x R2), and 3 training steps at P = 2 (U1 x R2) on
#              it give exactly the losses (loss, loss_ttt[]: equal floats, tolerance 0) of the
#              pre-sharded store; SGLang-path keys (ultrachat.v2/conv:7_...) are stored under
#              the escaped file names that scripts/mooncake_producer.py computes
#   num_aux    data with 2 and 4 aux layers (model.config.num_aux_hidden_states 2 / 4): data check
#              against the full samples, 3 training steps, export with fc.weight [H, num_aux*Ht];
#              data of another num_aux, a resume and an init_from of another fc shape: clear
#              errors, exit 2 on every rank
#   packed     samples packing 3 documents (manifest segments, DESIGN §6), pre-sharded and
#              unsharded: data check against its own row-by-row rebuild of each rank's runs,
#              halos and positions (U2 and one rank), 3 training steps on one rank and on U2 with
#              equal losses (1e-5), and a ring run refused naming the line
# usage: data_layouts.sh unsharded|num_aux|packed EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
what=$1 eaglet=$2 mpirun=$3 py=$4 src=$5 out=$6/$1
rm -rf "$out" && mkdir -p "$out"
fail=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fail=1; fi; }
common=(--config "$src/configs/demo.yaml" --set runtime.device=cpu --set training.warmup_ratio=0
        --set checkpoint.interval=0 --set data.eval_manifest= --set training.log_interval=1
        --set data.max_seq_length=64 --set model.config.intermediate_size=64 --set training.lr=1e-3)
run() {  # run NP LOG eaglet-args...: every rank's exit code as "EXIT rank=R code=C" lines
  local np=$1 log=$2
  shift 2
  timeout 300 "$mpirun" -np "$np" sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" "$@" >"$log" 2>&1
}
all_exit() { [ "$(grep -c "^EXIT rank=[0-9]* code=$3$" "$1")" = "$2" ]; }
layout=(--set parallel.ulysses=1 --set parallel.ring=2)

case $what in
unsharded)
  for kind in sharded unsharded; do
    flag=()
    [ $kind = unsharded ] && flag=(--unsharded)
    "$eaglet" data synth "${common[@]}" "${layout[@]}" --set data.path="$out/$kind" --samples 10 \
      --seed 5 --save-full "$out/full" "${flag[@]}" >"$out/synth_$kind.log" 2>&1
    check grep -q "10 samples" "$out/synth_$kind.log"
    # One more sample under an SGLang-path key (from the full sample synth saved).
    "$eaglet" data put "${common[@]}" "${layout[@]}" --set data.path="$out/$kind" \
      --key 'ultrachat.v2/conv:7_1a2b3c4d' --input "$out/full/synth5_000003.safetensors" "${flag[@]}" \
      >"$out/put_$kind.log" 2>&1
    check grep -q "eaglet data put: ultrachat.v2/conv:7_1a2b3c4d" "$out/put_$kind.log"
    cp "$out/full/synth5_000003.safetensors" "$out/full/ultrachat.v2/conv:7_1a2b3c4d.safetensors" 2>/dev/null ||
      { mkdir -p "$out/full/ultrachat.v2" && cp "$out/full/synth5_000003.safetensors" "$out/full/ultrachat.v2/conv:7_1a2b3c4d.safetensors"; }
  done
  check test -f "$out/unsharded/synth5_000000_hs"
  check test ! -e "$out/unsharded/synth5_000000_usp0_hs"
  check grep -q '"usp_sharded":false' "$out/unsharded/manifest.jsonl"
  # The file names are the Python producer's dir_file_name of the object keys.
  check env PYTHONPATH="$src/scripts" "$py" -c "
import os, sys, mooncake_producer as mp
for store, keys in ((sys.argv[1], [f'ultrachat.v2/conv:7_1a2b3c4d_usp{s}_{o}' for s in (0, 1) for o in ('hs', 'ids', 'lhs')]),
                    (sys.argv[2], [f'ultrachat.v2/conv:7_1a2b3c4d_{o}' for o in ('hs', 'ids', 'lhs')])):
    names = {mp.dir_file_name(k) for k in keys}
    assert names <= set(os.listdir(store)), (names, sorted(os.listdir(store)))
    assert mp.dir_file_name('ultrachat.v2/conv:7_1a2b3c4d_hs') == 'ultrachat%2Ev2%2Fconv%3A7_1a2b3c4d_hs'
" "$out/sharded" "$out/unsharded"
  # Bit for bit against the full samples, both layouts, each rank its own rows.
  for kind in sharded unsharded; do
    run 2 "$out/check_$kind.log" data check "${common[@]}" "${layout[@]}" --set data.path="$out/$kind" \
      --reference "$out/full"
    check all_exit "$out/check_$kind.log" 2 0
    check grep -q "11 samples read by 1 replicas x 2 SP ranks.*0 mismatches against $out/full: PASS" "$out/check_$kind.log"
  done
  for kind in sharded unsharded; do
    run 2 "$out/train_$kind.log" train "${common[@]}" "${layout[@]}" --set data.path="$out/$kind" \
      --set model.target="$out/$kind/target" --set output_dir="$out/run_$kind" --set training.max_steps=3
    check all_exit "$out/train_$kind.log" 2 0
  done
  # Same bytes in, same computation: the losses must be equal floats (tolerance 0).
  check "$py" - "$out/run_sharded/metrics.jsonl" "$out/run_unsharded/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:])
assert len(a) == len(b) == 3, (len(a), len(b))
for x, y in zip(a, b):
    assert x["step"] == y["step"] and x["loss"] == y["loss"] and x["loss_ttt"] == y["loss_ttt"], (x, y)
    print("step", x["step"], "loss", x["loss"], "==", y["loss"])
PY
  ;;
num_aux)
  for n in 2 4; do
    aux=(--set model.config.num_aux_hidden_states=$n)
    "$eaglet" data synth "${common[@]}" "${layout[@]}" "${aux[@]}" --set data.path="$out/aux$n" --samples 8 \
      --seed 3 --num-aux $n --save-full "$out/full$n" >"$out/synth$n.log" 2>&1
    check grep -q "\"num_aux\":$n," "$out/aux$n/manifest.jsonl"
    run 2 "$out/check$n.log" data check "${common[@]}" "${layout[@]}" "${aux[@]}" --set data.path="$out/aux$n" \
      --reference "$out/full$n"
    check all_exit "$out/check$n.log" 2 0
    check grep -q "0 mismatches against $out/full$n: PASS" "$out/check$n.log"
    run 2 "$out/train$n.log" train "${common[@]}" "${layout[@]}" "${aux[@]}" --set data.path="$out/aux$n" \
      --set model.target="$out/aux$n/target" --set output_dir="$out/run$n" --set training.max_steps=3
    check all_exit "$out/train$n.log" 2 0
    check test "$(grep -c '"step":' "$out/run$n/metrics.jsonl")" = 3
    "$eaglet" export --checkpoint "$out/run$n" --out "$out/export$n" >"$out/export$n.log" 2>&1
    check "$py" - "$out/export$n/model.safetensors" $((n * 64)) <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
assert header["fc.weight"]["shape"] == [64, int(sys.argv[2])], header["fc.weight"]
PY
  done
  # 4-aux data with the default draft (3 aux layers): refused naming the line and both values.
  run 2 "$out/mismatch.log" train "${common[@]}" "${layout[@]}" --set data.path="$out/aux4" \
    --set model.target="$out/aux4/target" --set output_dir="$out/run_mismatch" --set training.max_steps=1
  check all_exit "$out/mismatch.log" 2 2
  check grep -q "manifest.jsonl:1: sample synth3_000000: num_aux=4 differs from this run's model.config.num_aux_hidden_states=3" "$out/mismatch.log"
  # Resume the 2-aux run with a 4-aux draft, and start a 4-aux run from the 2-aux export.
  run 2 "$out/resume.log" train "${common[@]}" "${layout[@]}" --set model.config.num_aux_hidden_states=4 \
    --set data.path="$out/aux4" --set model.target="$out/aux4/target" --set output_dir="$out/run2" \
    --set training.max_steps=4 --resume auto
  check all_exit "$out/resume.log" 2 2
  check grep -q "num_aux_hidden_states is 2 there (fc takes 2 aux layers) and 4 in this run's model.config" "$out/resume.log"
  run 2 "$out/init.log" train "${common[@]}" "${layout[@]}" --set model.config.num_aux_hidden_states=4 \
    --set data.path="$out/aux4" --set model.target="$out/aux4/target" --set output_dir="$out/run_init" \
    --set training.max_steps=1 --set model.init_from="$out/export2"
  check all_exit "$out/init.log" 2 2
  check grep -q "fc.weight is \[64, 128\] but this run's draft needs \[64, 256\] = model.config.num_aux_hidden_states=4" "$out/init.log"
  ;;
packed)
  # Samples packing 3 documents each (manifest segments), pre-sharded for P = 2 and unsharded.
  for kind in sharded unsharded; do
    flag=()
    [ $kind = unsharded ] && flag=(--unsharded)
    "$eaglet" data synth "${common[@]}" --set parallel.ring=1 --set parallel.ulysses=2 --set data.path="$out/$kind"       --samples 8 --seed 4 --documents 3 --save-full "$out/full" "${flag[@]}" >"$out/synth_$kind.log" 2>&1
    check grep -q "8 samples" "$out/synth_$kind.log"
    check test "$(grep -c '"segments":\[[0-9]*,[0-9]*,[0-9]*\]' "$out/$kind/manifest.jsonl")" = 8
  done
  # Each rank's runs, halos (zero past a document's end), loss mask and restarting positions,
  # against data check's own row-by-row rebuild from the full samples: U2 x R1 on both stores,
  # and one rank on the unsharded one.
  for case in "sharded 2" "unsharded 2" "unsharded 1"; do
    set -- $case
    run $2 "$out/check_$1_$2.log" data check "${common[@]}" --set parallel.ring=1 --set parallel.ulysses=$2       --set data.path="$out/$1" --reference "$out/full"
    check all_exit "$out/check_$1_$2.log" $2 0
    check grep -q "8 samples read by 1 replicas x $2 SP ranks.*0 mismatches against $out/full: PASS" "$out/check_$1_$2.log"
  done
  # 3 training steps on one rank and on U2 x R1 (documents across shards): the same losses
  # (fp32, relative 1e-5: only the order of the sums differs).
  for np in 1 2; do
    run $np "$out/train_$np.log" train "${common[@]}" --set parallel.ring=1 --set parallel.ulysses=$np       --set data.path="$out/unsharded" --set model.target="$out/unsharded/target"       --set output_dir="$out/run_$np" --set training.max_steps=3
    check all_exit "$out/train_$np.log" $np 0
  done
  check "$py" - "$out/run_1/metrics.jsonl" "$out/run_2/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:])
assert len(a) == len(b) == 3, (len(a), len(b))
for x, y in zip(a, b):
    for u, v in zip([x["loss"]] + x["loss_ttt"], [y["loss"]] + y["loss_ttt"]):
        assert abs(u - v) <= 1e-5 * max(abs(u), abs(v)), (x, y)
    print("step", x["step"], "loss", x["loss"], "(1 rank) vs", y["loss"], "(U2)")
PY
  # A ring run cannot keep block 0 inside the documents: refused naming the line.
  run 2 "$out/ring.log" train "${common[@]}" --set parallel.ulysses=1 --set parallel.ring=2 --set data.path="$out/unsharded"     --set model.target="$out/unsharded/target" --set output_dir="$out/run_ring" --set training.max_steps=1
  check all_exit "$out/ring.log" 2 2
  check grep -q "manifest.jsonl:1: sample synth4_000000: a packed sample (3 documents in segments) needs parallel.ring = 1, this run has parallel.ring = 2" "$out/ring.log"
  ;;
*)
  echo "usage: $0 unsharded|num_aux|packed ..."
  exit 2
  ;;
esac
[ $fail = 0 ] && echo "data_layouts $what: PASS" || echo "data_layouts $what: FAIL"
exit $fail
