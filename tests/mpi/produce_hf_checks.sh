#!/usr/bin/env bash
# scripts/produce_hf.py end to end on a tiny random Llama target (CPU, 8 layers, hidden 64, 4 query /
# 2 KV heads, ~300-token word-level tokenizer; tests/python/test_produce_hf.py makes it, no hub):
#   tied    the target answers every prompt itself (--generate, greedy, 6 new tokens, 4 prompts
#           at a time: left-padded batches, checked against one-at-a-time generation), default aux
#           layers [1, 3, 4], draft vocabulary = the target's
#   untied  the dataset's answers, --aux-layers 5,0,2, --draft-vocab-size 64, written in two runs
#           (--limit 3, then all: the second resumes, skipping the 3 keys the manifest has)
# Each into a dir store for P = 2, T = 3, max_seq_length 96, then: every shard file and manifest line
# equal to a recomputation with transformers (hooks on the layers' outputs, the chat template's
# assistant mask), the head folder equal to the model's weights; `eaglet data check` on 2 ranks
# passes; `eaglet train` on 2 ranks (U 2 for tied, R 2 for untied), model.target = the producer's
# --target-out, model.config = its --draft-config-out, exits 0 after 3 steps on every rank.
# usage: produce_hf_checks.sh EAGLET MPIRUN PYTHON SOURCE_DIR OUT
set -uo pipefail
eaglet=$1 mpirun=$2 py=$3 src=$4 out=$5
rm -rf "$out" && mkdir -p "$out"
fail=0
check() { if "$@"; then echo "ok   $*"; else echo "FAIL $*"; fail=1; fi; }
has() { grep -qF -- "$2" "$1" || { echo "    $1 lacks: $2"; tail -5 "$1" | sed 's/^/    /'; return 1; }; }
if ! "$py" -c "import transformers, tokenizers, safetensors" 2>"$out/import.log"; then
  echo "FAIL $py cannot import transformers/tokenizers/safetensors (scripts/setup.sh installs them):"
  tail -1 "$out/import.log"
  echo "produce_hf_checks: FAIL"
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false

test_py=$src/tests/python/test_produce_hf.py
timeout 120 "$py" "$test_py" prepare "$out" >"$out/prepare.log" 2>&1
check has "$out/prepare.log" "test_produce_hf unit: 0 failed: PASS"

# produce VARIANT [options...]: one producer run into $out/VARIANT (log appended to VARIANT.log)
produce() {
  local v=$1
  shift
  timeout 180 "$py" "$src/scripts/produce_hf.py" --target "$out/$v" --input "$out/prompts.jsonl" \
    --dir "$out/$v.run/store" --sp-size 2 --ttt-length 3 --max-seq-length 96 --threads 1 \
    --target-out "$out/$v.run/target" --draft-config-out "$out/$v.run/draft.json" "$@" \
    >>"$out/$v.log" 2>&1
  echo "producer exit $?" >>"$out/$v.log"
}
produce tied --generate --max-new-tokens 6 --generate-batch 4  # a full and a partial batch
check has "$out/tied.log" "wrote 6 samples"
check has "$out/tied.log" "producer exit 0"
produce untied --aux-layers 5,0,2 --draft-vocab-size 64 --limit 3
produce untied --aux-layers 5,0,2 --draft-vocab-size 64
check has "$out/untied.log" "wrote 2 samples"
check has "$out/untied.log" "skipped 3 already in the manifest, 1 without loss tokens, 0 invalid; 1 cut"
check has "$out/untied.log" "tie_word_embeddings=false"

# What the producer should have done in each run: aux ids, new tokens (0: no --generate), keys.
timeout 180 "$py" "$test_py" check "$out" --sp-size 2 --ttt-length 3 \
  --run tied:1,3,4:6:0,1,2,3,4,5 --run untied:0,2,5:0:0,1,2,4,5 >"$out/check.log" 2>&1
check has "$out/check.log" "test_produce_hf check: 2 runs, 0 mismatches: PASS"

# eaglet on the produced data: data check, then 3 training steps, on every rank exit 0.
run() {  # run VARIANT U R LOG COMMAND...: output in $out/VARIANT.LOG.log, each rank prints its EXIT
  local v=$1 u=$2 r=$3 log=$4
  shift 4
  cat >"$out/$v.yaml" <<EOF
output_dir: $out/$v.run/train
parallel: {ulysses: $u, ring: $r}
runtime: {device: cpu, threads: 1}
data: {store: dir, path: $out/$v.run/store, max_seq_length: 96}
model: {target: $out/$v.run/target, config: $out/$v.run/draft.json}
training: {ttt_length: 3, max_steps: 3, lr: 1.0e-3, warmup_ratio: 0, log_interval: 1}
checkpoint: {interval: 0}
EOF
  timeout 120 "$mpirun" -np 2 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" "$@" --config "$out/$v.yaml" >"$out/$v.$log.log" 2>&1
}
all_exit0() { [ "$(grep -c '^EXIT rank=[0-9]* code=0$' "$1")" = 2 ] || { tail -5 "$1"; return 1; }; }
for layout in "tied 2 1" "untied 1 2"; do
  set -- $layout
  run "$1" "$2" "$3" data data check
  check has "$out/$1.data.log" "SP ranks agree: yes; 0 mismatches: PASS"
  run "$1" "$2" "$3" train train
  check all_exit0 "$out/$1.train.log"
  check has "$out/$1.train.log" "done: step 3"
done

echo "produce_hf_checks: $([ $fail = 0 ] && echo PASS || echo FAIL)"
[ $fail = 0 ]
