#!/usr/bin/env bash
# One device-machine run of everything GPU: build, GPU unit tests (bf16 kernels and model),
# NCCL collectives on every group, and verify-usp through NCCL in bf16 for the layouts the GPUs
# allow. Prints a summary table; logs go to ${OUT:-/tmp}/gpu_check.
# Environment: SKIP_TOPO=1 (no NCCL collective tests), LAYOUTS="2x2 4x1" (verify-usp layouts U x R;
# empty for none; a layout with more ranks than GPUs runs with runtime.collectives=host, ranks
# sharing GPUs, unless HOST=0; UxRxD adds D data-parallel replicas), KERNELS, SEQ, T, VERIFY_ARGS
# (more verify-usp arguments), BENCH_SEQS, TRAIN=1 (a short training run on up to 2 GPUs).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
log=${OUT:-/tmp}/gpu_check
mkdir -p "$log"
EAGLET_NO_APT=1 scripts/build.sh >"$log/build.log" 2>&1 || { tail -40 "$log/build.log"; exit 1; }
gpus=$(nvidia-smi -L | grep -c '^GPU')
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
echo "== GPU unit tests (bf16) =="
build/tests/eaglet_tests "[gpu]" -s >"$log/gpu_unit.log" 2>&1
grep -E "rel err|FAILED|test cases|assertions|^skipped" "$log/gpu_unit.log" | grep -vE "^\s*$" | tail -${GPU_UNIT_LINES:-12}
if [ "${SKIP_TOPO:-0}" != 1 ]; then
  echo "== NCCL collectives =="
  (cd build && ctest -L gpu -R nccl --output-on-failure 2>&1 | grep -E "ok |FAIL|Passed|Failed")
fi
echo "== verify-usp, bf16 (one rank per GPU through NCCL; more ranks than GPUs through host memory) =="
# A draft with realistic head size (d = 128, GQA 4:1) and a sequence not divisible by P.
model=(--set model.config.hidden_size=1024 --set model.config.num_attention_heads=8
       --set model.config.num_key_value_heads=4 --set model.config.head_dim=128
       --set model.config.intermediate_size=2048 --set model.config.vocab_size=4000
       --set model.config.draft_vocab_size=2000 --set model.config.target_hidden_size=1024
       --set training.ttt_length=${T:-3} --set runtime.device=cuda --set data.max_seq_length=100000)
for layout in ${LAYOUTS-2x1 1x2 2x2 4x1}; do  # LAYOUTS= (empty): none; UxR or UxRxD (D replicas)
  IFS=x read -r u r dp <<<"$layout"
  dp=${dp:-1} np=$((u * r * dp))
  # More ranks than GPUs: the ranks share them and exchange through host memory (the CUDA
  # kernels and the layout's maths as on np GPUs; only the transport differs). HOST=0 skips.
  comm=(--set runtime.collectives=auto) how="$np GPUs"
  if [ "$np" -gt "$gpus" ]; then
    [ "${HOST:-1}" = 1 ] || continue
    comm=(--set runtime.collectives=host) how="$np ranks on $gpus GPU(s), collectives through host memory"
  fi
  for attn in ${KERNELS:-auto}; do
    out=$(timeout 300 scripts/mpirun.sh -np "$np" build/eaglet verify-usp --config configs/demo.yaml "${model[@]}" \
      --set parallel.ulysses="$u" --set parallel.ring="$r" --set model.attention="$attn" "${comm[@]}" \
      --set output_dir="$log/usp_$layout" --seq ${SEQ:-4001} ${VERIFY_ARGS:-} 2>&1)
    echo "$out" >"$log/usp_$layout.log"
    echo "U x R x D = $u x $r x $dp ($how, attention $attn): $(echo "$out" | grep -E '^verify-usp:' || echo "$out" | tail -3)"
    echo "    $(echo "$out" | grep -oE 'worst gradient .*' | head -1)"
  done
done

if [ -n "${BENCH_SEQS:-}" ]; then
  echo "== bench: Qwen3-8B draft, one GPU, bf16, T = 7 =="
  for seq in $BENCH_SEQS; do
    timeout 300 build/eaglet bench --config configs/bench/qwen3-8b.yaml --set output_dir="$log/bench" --seq "$seq" \
      --steps 3 2>&1 | grep -E "^bench:|error|out of memory" | tail -2
  done
fi
if [ "${TRAIN:-0}" = 1 ]; then
  # Up to 2 GPUs (U x R = np x 1), two micro-batches per step: the data decision over the host
  # communicator runs once per micro-batch.
  np=$(( gpus < 2 ? gpus : 2 ))
  echo "== training on synthetic data, $np GPU(s) (U x R = $np x 1), bf16, grad_accum 2 =="
  d=$log/train
  build/eaglet data synth --config configs/demo.yaml --set parallel.ulysses=$np --set parallel.ring=1 \
    --set data.path=$d/store --samples 40 >/dev/null
  timeout 300 scripts/mpirun.sh -np $np build/eaglet train --config configs/demo.yaml --set runtime.device=cuda \
    --set parallel.ulysses=$np --set parallel.ring=1 --set data.path=$d/store --set model.target=$d/store/target \
    --set data.eval_manifest= --set training.grad_accum=2 --set output_dir=$d/run --set training.log_interval=50 \
    2>&1 | grep -E "step (50|100|150|200)/|done|rror"
fi
