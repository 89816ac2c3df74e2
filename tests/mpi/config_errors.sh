#!/usr/bin/env bash
# Each config rule and command-line error broken on purpose, under mpirun: the documented message
# must appear exactly once (from rank 0) and every rank must exit with code 2 within the time limit
# (a hang fails the test).
# usage: config_errors.sh EAGLET MPIRUN BASE_CONFIG OUT_DIR
set -uo pipefail
eaglet=$1 mpirun=$2 base=$3 out=$4
mkdir -p "$out"
failures=0 cases=0

# run_cmd_case NAME NP EXPECTED_MESSAGE ARGS... : runs `eaglet ARGS` on NP ranks.
run_cmd_case() {
  local name=$1 np=$2 expected=$3
  shift 3
  cases=$((cases + 1))
  local log="$out/$name.log"
  timeout 120 "$mpirun" -np "$np" sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" "$@" >"$log" 2>&1
  local rc=$?
  local exits printed bad=""
  exits=$(grep -c "^EXIT rank=[0-9]* code=2$" "$log")
  printed=$(grep -cF -- "$expected" "$log")
  [ "$rc" = 124 ] && bad="hung (killed after 120 s)"
  [ -z "$bad" ] && [ "$printed" = 0 ] && bad="message not found: $expected"
  [ -z "$bad" ] && [ "$printed" != 1 ] && bad="message printed $printed times, not once: $expected"
  [ -z "$bad" ] && [ "$exits" != "$np" ] && bad="$exits of $np ranks exited with code 2"
  if [ -n "$bad" ]; then
    failures=$((failures + 1))
    echo "FAIL $name: $bad"
    sed 's/^/    /' "$log" | head -20
  else
    echo "ok   $name ($np ranks exit 2): $expected"
  fi
}

# run_case NAME NP EXPECTED_MESSAGE ARGS... : runs `eaglet topo ARGS` on NP ranks.
run_case() {
  local name=$1 np=$2 expected=$3
  shift 3
  run_cmd_case "$name" "$np" "$expected" topo "$@"
}

S=(--config "$base" --set "output_dir=$out/run" --set parallel.ulysses=1 --set parallel.ring=1)
run_case unknown_key_set 2 "config error: training.lrr: unknown key in --set (did you mean training.lr?)" "${S[@]}" --set training.lrr=1
printf 'output_dir: %s\ntrainig:\n  lr: 0.1\n' "$out/run" >"$out/unknown.yaml"
run_case unknown_key_file 2 "config error: trainig.lr: unknown key in $out/unknown.yaml (did you mean training.lr?)" --config "$out/unknown.yaml"
printf 'output_dir: %s\ntraining:\n  lr: 0.1\n  seed: 1\n  lr: 0.2\n' "$out/run" >"$out/duplicate.yaml"
run_case duplicate_key 4 "config error: training.lr: duplicate key in $out/duplicate.yaml (lines 3 and 5)" --config "$out/duplicate.yaml"
printf 'output_dir: %s\ntraining:\n  lr: 0.1\ntraining:\n  seed: 1\n' "$out/run" >"$out/duplicate_top.yaml"
run_case duplicate_section 2 "config error: training: duplicate key in $out/duplicate_top.yaml (lines 2 and 4)" --config "$out/duplicate_top.yaml"
run_case quoted_int 2 'config error: training.max_steps="10": expected int, got a quoted string' "${S[@]}" --set 'training.max_steps="10"'
printf 'output_dir: %s\ntraining:\n  lr: "1e-4"\n' "$out/run" >"$out/quoted.yaml"
run_case quoted_float 2 'config error: training.lr="1e-4": expected float, got a quoted string' --config "$out/quoted.yaml"
run_case wrong_type_float 2 "config error: training.lr=abc: expected float" "${S[@]}" --set training.lr=abc
run_case wrong_type_int 2 "config error: parallel.ring=1.5: expected int" "${S[@]}" --set parallel.ring=1.5
run_case wrong_type_bool 2 "config error: data.consume=maybe: expected bool" "${S[@]}" --set data.consume=maybe
run_case world_divisible 2 "config error: parallel.ulysses*parallel.ring=4: world size 2 must be divisible by ulysses*ring" "${S[@]}" --set parallel.ulysses=2 --set parallel.ring=2
run_case heads_divisible 4 "config error: model.config.num_attention_heads=6: must be divisible by parallel.ulysses (4)" "${S[@]}" --set parallel.ulysses=4 --set model.config.num_attention_heads=6 --set model.config.num_key_value_heads=2
run_case kv_heads_divisible 4 "config error: model.config.num_key_value_heads=2: must be divisible by parallel.ulysses (4)" "${S[@]}" --set parallel.ulysses=4 --set model.config.num_attention_heads=8 --set model.config.num_key_value_heads=2
run_case gqa_ratio 1 "config error: model.config.num_attention_heads=6: must be divisible by model.config.num_key_value_heads (4)" "${S[@]}" --set model.config.num_attention_heads=6 --set model.config.num_key_value_heads=4
run_case ulysses_positive 2 "config error: parallel.ulysses=0: must be >= 1" "${S[@]}" --set parallel.ulysses=0
run_case ring_positive 2 "config error: parallel.ring=-1: must be >= 1" "${S[@]}" --set parallel.ring=-1
run_case head_dim_even 2 "config error: model.config.head_dim=15: must be even (RoPE rotates halves)" "${S[@]}" --set model.config.head_dim=15
run_case draft_vocab 2 "config error: model.config.draft_vocab_size=512: must be <= model.config.vocab_size (256)" "${S[@]}" --set model.config.draft_vocab_size=512
run_case store 2 "config error: data.store=s3: must be one of dir, mooncake" "${S[@]}" --set data.store=s3
run_case on_error 2 "config error: data.on_error=ignore: must be one of fail, skip" "${S[@]}" --set data.on_error=ignore
run_case device 2 "config error: runtime.device=tpu: must be one of auto, cpu, cuda" "${S[@]}" --set runtime.device=tpu
run_case collectives 2 "config error: runtime.collectives=gloo: must be one of auto, nccl, host" "${S[@]}" --set runtime.collectives=gloo
run_case nccl_on_cpu 2 "config error: runtime.collectives=nccl: nccl needs runtime.device cuda (or auto on a GPU machine)" "${S[@]}" --set runtime.device=cpu --set runtime.collectives=nccl
run_case log_level 2 "config error: runtime.log_level=loud: must be one of trace, debug, info, warn, error" "${S[@]}" --set runtime.log_level=loud
run_case max_seq 2 "config error: data.max_seq_length=3: must be > training.ttt_length (3)" "${S[@]}" --set data.max_seq_length=3
run_case ttt_length 2 "config error: training.ttt_length=0: must be >= 1" "${S[@]}" --set training.ttt_length=0
run_case lr 2 "config error: training.lr=-1: must be > 0" "${S[@]}" --set training.lr=-1
run_case min_lr 2 "config error: training.min_lr=1: must be in [0, training.lr (0.002)]" "${S[@]}" --set training.lr=0.002 --set training.min_lr=1
run_case warmup 2 "config error: training.warmup_ratio=2: must be in [0, 1]" "${S[@]}" --set training.warmup_ratio=2
run_case grad_accum 2 "config error: training.grad_accum=0: must be >= 1" "${S[@]}" --set training.grad_accum=0
run_case ttt_weights 2 "config error: training.ttt_weights=[1, 0.5]: must have training.ttt_length (3) entries" "${S[@]}" --set "training.ttt_weights=[1, 0.5]"
run_case keep 2 "config error: checkpoint.keep=0: must be >= 1" "${S[@]}" --set checkpoint.keep=0
run_case missing_file 2 "config error: $out/nope.yaml: file not found or unreadable" --config "$out/nope.yaml"
printf 'parallel: [1, 2\n' >"$out/broken.yaml"
run_case bad_yaml 2 "config error: $out/broken.yaml: not valid YAML" --config "$out/broken.yaml"
run_case no_config 2 "eaglet topo: --config FILE is required"
run_case bad_set 2 "config error: --set parallel.ring: expected key=value" "${S[@]}" --set parallel.ring
run_case output_dir 2 "output_dir=/proc/eaglet-test: cannot create the folder" "${S[@]}" --set output_dir=/proc/eaglet-test
# Command-line errors come before MPI exists: rank 0 (by the launcher's environment) prints them.
run_cmd_case unknown_option 4 "eaglet train: unknown option '--bogus' (see eaglet train --help)" train --bogus
run_cmd_case missing_value 4 "eaglet train: option --config needs a value FILE" train --config
run_cmd_case unknown_command 4 "eaglet: unknown command 'trian'" trian --config "$base"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  run_case no_gpu 2 "runtime.device=cuda: no CUDA device visible" "${S[@]}" --set runtime.device=cuda
fi

echo "$((cases - failures)) of $cases config error cases passed"
[ "$failures" = 0 ]
