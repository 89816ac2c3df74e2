#!/usr/bin/env bash
# ctest export_loaders: a tiny eaglet run (synthetic data, 1 rank, 2 steps) exported, then
# tests/python/check_export_loaders.py re-enacts SGLang's and vLLM's Eagle3 load_weights on it.
# Cases: --aux-layer-ids given (with the harmless --vllm), the ids carried from a model.config
# JSON's eagle_config through the checkpoint, and --no-embeddings.
# usage: export_loaders.sh EAGLET PYTHON SOURCE_DIR OUT
set -uo pipefail
eaglet=$1 py=$2 src=$3 out=$4
rm -rf "$out" && mkdir -p "$out"
common=(--config "$src/configs/demo.yaml" --set parallel.ulysses=1 --set parallel.ring=1
        --set data.path="$out/store" --set data.max_seq_length=64 --set data.eval_manifest=
        --set runtime.threads=1 --set model.target="$out/store/target" --set checkpoint.interval=0)
run() { "$@" >>"$out/log" 2>&1 || { echo "FAIL: $* (exit $?)"; tail -20 "$out/log"; exit 1; }; }
check() { "$py" "$src/tests/python/check_export_loaders.py" "$@" || { echo "FAIL: check $*"; exit 1; }; }
run "$eaglet" data synth "${common[@]}" --set output_dir="$out/synth" --samples 4 --seed 3 \
  --min-len 40 --max-len 60
run "$eaglet" train "${common[@]}" --set output_dir="$out/run" --set training.max_steps=2
run "$eaglet" export --checkpoint "$out/run" --out "$out/export" --aux-layer-ids 1,14,26 --vllm
grep -q "no longer needed" "$out/log" || { echo "FAIL: --vllm gave no warning"; exit 1; }
check "$out/export" --expect-aux 1,14,26
run "$eaglet" export --checkpoint "$out/run" --out "$out/export_noemb" --no-embeddings
check "$out/export_noemb" --no-embeddings
# The draft config as a JSON file with eagle_config's ids: they travel in the checkpoint.
ckpt=$(ls -d "$out"/run/checkpoints/step_* | tail -1)
"$py" - "$ckpt/config.json" "$out/draft_config.json" <<'PY' || { echo "FAIL: draft config"; exit 1; }
import json, sys
c = json.load(open(sys.argv[1]))
c["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": [2, 7, 11]}
json.dump(c, open(sys.argv[2], "w"))
PY
run "$eaglet" train "${common[@]}" --set output_dir="$out/run2" --set training.max_steps=1 \
  --set model.config="$out/draft_config.json"
run "$eaglet" export --checkpoint "$out/run2" --out "$out/export2"
check "$out/export2" --expect-aux 2,7,11
echo "export_loaders: PASS"
