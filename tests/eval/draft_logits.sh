#!/usr/bin/env bash
# scripts/spec_eval.py's draft forward against eaglet's own (ctest eval_draft_logits): synthetic
# full samples and target (eaglet data synth --save-full, 1 rank, T = 3), a draft trained 3 steps
# and exported (bf16, SGLang names), the trainer's per-step logits on one sample (draft_logits:
# the fp64 reference unroll), then tests/eval/compare_draft_logits.py (tolerances declared there).
# Also an export of eaglet's init (one step at lr 1e-30 moves no fp32 weight) against
# spec_eval's --random-draft initialisation.
# Exit 77 (skip) only where PYTHON cannot import transformers.
# usage: draft_logits.sh EAGLET DRAFT_LOGITS PYTHON SOURCE_DIR OUT
set -uo pipefail
eaglet=$1 tool=$2 py=$3 src=$4 out=$5
if ! "$py" -c "import transformers" >/dev/null 2>&1; then
  echo "SKIP: $py cannot import transformers (scripts/setup.sh installs it)"
  exit 77
fi
rm -rf "$out" && mkdir -p "$out"
common=(--config "$src/configs/demo.yaml" --set parallel.ulysses=1 --set parallel.ring=1
        --set data.path="$out/store" --set data.max_seq_length=64 --set data.eval_manifest=
        --set runtime.threads=1 --set model.target="$out/store/target" --set checkpoint.interval=0)
run() { "$@" >>"$out/log" 2>&1 || { echo "FAIL: $* (exit $?)"; tail -20 "$out/log"; exit 1; }; }
run "$eaglet" data synth "${common[@]}" --set output_dir="$out/synth" --samples 4 --seed 3 \
  --min-len 40 --max-len 60 --save-full "$out/full"
run "$eaglet" train "${common[@]}" --set output_dir="$out/run" --set training.max_steps=3
run "$eaglet" export --checkpoint "$out/run" --out "$out/export"
run "$eaglet" train "${common[@]}" --set output_dir="$out/init" --set training.max_steps=1 \
  --set training.lr=1e-30 --set training.warmup_ratio=0 --set training.seed=5
run "$eaglet" export --checkpoint "$out/init" --out "$out/export_init"
sample=$(ls "$out"/full/*.safetensors | head -1)
run "$tool" --draft "$out/export" --target "$out/store/target" --sample "$sample" --steps 3 \
  --out "$out/logits.safetensors"
"$py" "$src/tests/eval/compare_draft_logits.py" --draft "$out/export" --target "$out/store/target" \
  --sample "$sample" --logits "$out/logits.safetensors" --init-export "$out/export_init" --seed 5
