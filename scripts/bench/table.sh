#!/usr/bin/env bash
# Builds eaglet on a device machine and prints the performance table of docs/PERFORMANCE.md for the
# Qwen3-8B reference draft (configs/bench/qwen3-8b.yaml): one-GPU rows for SEQS, and with 4 GPUs
# the USP rows (U x R = 4x1 and 2x2 at USP_SEQS; 2x2 also with the per-step zigzag exchange at
# the first of them) and the longest sequence (LONG_SEQ, 4x1, default and with the MLP recomputed). Each row: ms/step, tokens/s, peak GiB, and the floor measured on this card (its
# GEMM and causal-attention rates times the step's FLOPs, single-GPU floor / P) with the ratio,
# and for USP rows block 0's own time against one GPU's causal attention / P (--attention).
# One-GPU rows with `model.recompute_mlp` at MEM_SEQS follow the default ones; on a machine with
# several GPUs the one-GPU rows run side by side, one GPU each (PARALLEL_ROWS=0: one at a time).
# The length-mix rows (MIX, default sharegpt-like; empty: skipped) time the same documents one
# per step and packed up to MIX_SEQ (8192) tokens a step, MIX_STEPS (4) packed steps, with each
# attention kernel of MIX_ATTN (auto), against one MIX_SEQ-token sample.
# usage: [SEQS="8192 16384"] [MEM_SEQS="8192 16384"] [USP_SEQS="65536 131072"] [LONG_SEQ=262144]
#        [EXCHANGE_ROW=1] (SEQS, MEM_SEQS, LONG_SEQ empty or EXCHANGE_ROW=0: those rows skipped)
#        [PARALLEL_ROWS=1] [CONFIG=configs/bench/qwen3-8b.yaml] scripts/bench/table.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0
seqs=${SEQS-8192 16384 32768 65536}
usp_seqs=${USP_SEQS:-65536 131072}
long_seq=${LONG_SEQ-262144}
mem_seqs=${MEM_SEQS-8192 16384}
EAGLET_NO_APT=1 scripts/build.sh >/tmp/eaglet_bench_build.log 2>&1 || { tail -30 /tmp/eaglet_bench_build.log; exit 1; }
gpus=$(nvidia-smi -L | grep -c '^GPU')
card=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
# The device copy of the tree may carry a stale .git: a .eaglet_commit file written by whoever
# launched the run wins (git-ignored: `git rev-parse --short HEAD > .eaglet_commit`, then carry it).
commit=$(cat .eaglet_commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
bench=(build/eaglet bench --config "${CONFIG:-configs/bench/qwen3-8b.yaml}" --set model.attention=${ATTN:-auto} --no-split)
echo "card: $gpus x $card, commit: $commit"
echo "command: [scripts/mpirun.sh -np P] ${bench[*]} --seq N --steps S --warmup W --set output_dir=/tmp/eaglet_bench/<row> [--set parallel.ulysses=U --set parallel.ring=R] [--set model.recompute_mlp=true]"
echo
echo "| tokens | GPUs (U×R) | settings | ms/step | tokens/s | peak GiB | floor ms | ratio | efficiency | attention overhead |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row() {  # row SEQ NP U R STEPS SETTINGS [extra args]; one warm-up step from 65536 tokens on
  local seq=$1 np=$2 u=$3 r=$4 steps=$5 settings=$6 warmup=2
  shift 6
  [ "$seq" -ge 65536 ] && warmup=1
  local out
  out=$(timeout 420 scripts/mpirun.sh ${CUDA_VISIBLE_DEVICES+-x CUDA_VISIBLE_DEVICES} -np "$np" "${bench[@]}" --seq "$seq" --steps "$steps" --warmup "$warmup" \
        --set output_dir="/tmp/eaglet_bench/${seq}_${u}x${r}_${settings}" \
        --set parallel.ulysses="$u" --set parallel.ring="$r" "$@" 2>&1)
  local b f a over=""
  b=$(echo "$out" | grep -E "^bench:" | tail -1)
  f=$(echo "$out" | grep -E "^floor:" | tail -1)
  a=$(echo "$out" | grep -E "^attention:" | tail -1)
  [ -n "$a" ] && over=$(echo "$a" | sed -E 's/.*block 0 ([0-9.]+) ms.*share ([0-9.]+) ms, overhead ([0-9.]+x).*/\3 (\1 \/ \2 ms)/')
  if [ -z "$b" ]; then
    echo "| $seq | $np ($u×$r) | $settings | failed: $(echo "$out" | grep -oE 'out of memory|error[^\[]*' | head -1) | | | | | | |"
    return
  fi
  local ms tps gib fl ratio eff
  ms=$(echo "$b" | sed -E 's/.*: ([0-9.]+) ms\/step.*/\1/')
  tps=$(echo "$b" | sed -E 's/.* ([0-9]+) tokens\/s.*/\1/')
  gib=$(echo "$b" | sed -E 's/.*peak ([0-9.]+) GiB.*/\1/')
  fl=$(echo "$f" | sed -E 's/^floor: ([0-9.]+) ms.*/\1/')
  ratio=$(echo "$f" | sed -E 's/.*ratio ([0-9.]+x).*/\1/')
  eff=$(echo "$f" | sed -E 's/.*efficiency ([0-9]+%).*/\1/')
  echo "| $seq | $np ($u×$r) | $settings | $ms | $tps | $gib | $fl | $ratio | $eff | $over |"
}
# The one-GPU rows: with several GPUs, GPU i runs rows i, i + gpus, ... one after another (each
# process sees only its GPU), so the rows take about as long as the longest one; printed in order.
one_gpu_rows=()
for seq in $seqs; do
  steps=3
  [ "$seq" -ge 65536 ] && steps=2
  one_gpu_rows+=("$seq $steps default")
done
for seq in $mem_seqs; do  # the memory-lean setting at the peer's lengths
  one_gpu_rows+=("$seq 3 recompute_mlp --set model.recompute_mlp=true")
done
one_gpu_row() {  # one_gpu_row "SEQ STEPS SETTINGS [extra args]"
  local seq steps settings extra
  read -r seq steps settings extra <<<"$1"
  # shellcheck disable=SC2086  # extra: the row's --set arguments, split on purpose
  row "$seq" 1 1 1 "$steps" "$settings" $extra
}
lanes=$(( ${PARALLEL_ROWS:-1} == 1 ? gpus : 1 ))
if [ "$lanes" -le 1 ]; then
  for spec in "${one_gpu_rows[@]}"; do one_gpu_row "$spec"; done
else
  rows_dir=$(mktemp -d)
  for ((lane = 0; lane < lanes; ++lane)); do
    (
      export CUDA_VISIBLE_DEVICES=$lane
      for ((i = lane; i < ${#one_gpu_rows[@]}; i += lanes)); do
        one_gpu_row "${one_gpu_rows[$i]}" >"$rows_dir/$i"
      done
    ) &
  done
  wait
  for ((i = 0; i < ${#one_gpu_rows[@]}; ++i)); do cat "$rows_dir/$i"; done
  rm -rf "$rows_dir"
fi
# The length mix on one GPU: the same documents one per step and packed up to MIX_SEQ tokens a
# step (manifest segments), against one MIX_SEQ-token sample, all in this call.
mix_rows() {
  local single tps_single
  single=$(timeout 300 "${bench[@]}" --seq "$mix_seq" --steps 3 --warmup 2 --no-floor \
           --set output_dir=/tmp/eaglet_bench/mix_single 2>&1 | grep -E "^bench:" | tail -1)
  tps_single=$(echo "$single" | sed -nE 's/.* ([0-9]+) tokens\/s.*/\1/p')
  echo
  echo "Length mix \`$mix\` on one GPU (\`--length-mix $mix --seq $mix_seq --steps $mix_steps [--pack]\`; the same documents both ways), against one $mix_seq-token sample in the same call (${tps_single:-?} tokens/s):"
  echo
  echo "| mix | mode | attention | timed steps | documents | tokens (mean) | ms/step | tokens/s | peak GiB | vs one $mix_seq-token sample |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  local attn mode flag line
  for attn in ${MIX_ATTN:-auto}; do
    for mode in one packed; do
      flag=()
      [ $mode = packed ] && flag=(--pack)
      line=$(timeout 420 "${bench[@]}" --set model.attention="$attn" --length-mix "$mix" --seq "$mix_seq" \
             --steps "$mix_steps" --warmup 1 "${flag[@]}" --set output_dir=/tmp/eaglet_bench/mix_$mode 2>&1 |
             grep -E "^bench:|rror|out of memory" | tail -1)
      if ! echo "$line" | grep -q "^bench: mix"; then
        echo "| $mix | $mode | $attn | failed: $line | | | | | | |"
        continue
      fi
      local steps docs toks mean ms tps gib vs=""
      read -r docs toks mean steps <<<"$(echo "$line" | sed -E 's/.*: ([0-9]+) documents, ([0-9]+) tokens \(mean ([0-9]+)\) in ([0-9]+) timed steps.*/\1 \2 \3 \4/')"
      ms=$(echo "$line" | sed -E 's/.*: ([0-9.]+) ms\/step.*/\1/')
      tps=$(echo "$line" | sed -E 's/.* ([0-9]+) tokens\/s.*/\1/')
      gib=$(echo "$line" | sed -E 's/.*peak ([0-9.]+) GiB.*/\1/')
      [ -n "$tps_single" ] && vs=$(awk -v a="$tps" -v b="$tps_single" 'BEGIN { printf "%.2fx", a / b }')
      echo "| $mix | $([ $mode = packed ] && echo "packed to $mix_seq" || echo "one per step") | $attn | $steps | $docs | $toks ($mean) | $ms | $tps | $gib | $vs |"
    done
  done
}
mix=${MIX-sharegpt-like} mix_seq=${MIX_SEQ:-8192} mix_steps=${MIX_STEPS:-4}
[ -n "$mix" ] && mix_rows
if [ "$gpus" -ge 4 ]; then
  for seq in $usp_seqs; do
    for layout in 4x1 2x2; do
      row "$seq" 4 "${layout%x*}" "${layout#*x}" 2 "default" --attention
    done
  done
  first=${usp_seqs%% *}
  [ -n "$first" ] && [ "${EXCHANGE_ROW:-1}" = 1 ] && row "$first" 4 2 2 2 "zigzag_exchange" --attention --set parallel.ring_balance=zigzag_exchange
  if [ -n "$long_seq" ]; then
    row "$long_seq" 4 4 1 1 "default"
    row "$long_seq" 4 4 1 1 "recompute_mlp" --set model.recompute_mlp=true
  fi
fi
