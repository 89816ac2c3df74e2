#!/usr/bin/env bash
# The pre-sharded data path under real mpirun (docs/DATA.md).
#   read:   eaglet data synth (+ data put), then `eaglet data check` on 4 ranks (U x R = 2x2, 4x1,
#           1x4) and 8 ranks (2 replicas): every rank reads only its own shards and compares them
#           bit for bit with the full sample cut by the reference; a reader that starts before the
#           producer follows the growing manifest; data.consume leaves no object behind.
#   errors: a corrupt object, a missing object, a bad manifest line and a mismatched sp_size each
#           give the documented message and exit code 2 on every rank with data.on_error=fail (no
#           hang: each run has a time limit), and one counted neutralised sample with skip.
# usage: data_checks.sh read|errors EAGLET MPIRUN BASE_CONFIG OUT_DIR
set -uo pipefail
mode=$1 eaglet=$2 mpirun=$3 base=$4 out=$5/$1
rm -rf "$out"
mkdir -p "$out"
failures=0 cases=0

fail() {
  failures=$((failures + 1))
  echo "FAIL $1: $2"
  [ -f "$3" ] && sed 's/^/    /' "$3" | grep -v '^\s*$' | tail -25
}

# synth STORE N: synthetic samples for P=4 (U x R = 2x2 in the base config), T=3, L=256.
synth() {
  "$eaglet" data synth --config "$base" --set "data.path=$1" --set "output_dir=$out/synth" \
    --samples "$2" --save-full "$1.full" >"$out/synth_$(basename "$1").log" 2>&1 ||
    { echo "synth into $1 failed"; cat "$out/synth_$(basename "$1").log"; exit 1; }
}

# check NAME NP EXPECTED_CODE STORE [--set ...]: `eaglet data check` under mpirun; every rank's exit
# code is recorded; sets $log.
check() {
  local name=$1 np=$2 code=$3 store=$4
  shift 4
  cases=$((cases + 1))
  log="$out/$name.log"
  timeout 120 "$mpirun" -np "$np" sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$eaglet" data check --config "$base" --set "data.path=$store" --set "output_dir=$out/$name" \
    --reference "$store.full" --timeout 60 "$@" >"$log" 2>&1
  local rc=$?
  if [ "$rc" = 124 ]; then
    fail "$name" "hung (killed after 120 s)" "$log"
    return 1
  fi
  local exits
  exits=$(grep -c "^EXIT rank=[0-9]* code=$code$" "$log")
  if [ "$exits" != "$np" ]; then
    fail "$name" "$exits of $np ranks exited with code $code" "$log"
    return 1
  fi
  return 0
}

# expect NAME TEXT: the last check's log contains TEXT.
expect() {
  if ! grep -qF -- "$2" "$log"; then
    fail "$1" "message not found: $2" "$log"
    return 1
  fi
  return 0
}

ok() { echo "ok   $1"; }

if [ "$mode" = read ]; then
  store=$out/store
  synth "$store" 12
  # data put: a full sample file in, sharded under a new key.
  cp "$store.full/synth1_000002.safetensors" "$store.full/put_one.safetensors"
  "$eaglet" data put --config "$base" --set "data.path=$store" --set "output_dir=$out/put" \
    --key put_one --input "$store.full/put_one.safetensors" >"$out/put.log" 2>&1 ||
    fail put "eaglet data put failed" "$out/put.log"
  for layout in "2 2 4" "4 1 4" "1 4 4" "2 2 8"; do
    set -- $layout
    name=read_u$1r$2_np$3
    replicas=$(($3 / 4))
    check "$name" "$3" 0 "$store" --set parallel.ulysses=$1 --set parallel.ring=$2 &&
      expect "$name" "data check: 13 samples read by $replicas replicas x 4 SP ranks" &&
      expect "$name" "SP ranks agree: yes; 0 mismatches against $store.full: PASS" && ok "$name"
  done

  # A reader started before the producer follows the manifest as it grows.
  follow=$out/follow
  cases=$((cases + 1))
  timeout 120 "$mpirun" -np 4 "$eaglet" data check --config "$base" --set "data.path=$follow" \
    --set "output_dir=$out/follow_run" --reference "$follow.full" --samples 6 --timeout 60 \
    >"$out/follow.log" 2>&1 &
  reader=$!
  sleep 2
  synth "$follow" 6
  wait $reader
  rc=$?
  log=$out/follow.log
  if [ "$rc" != 0 ]; then
    fail follow "reader exited with $rc" "$log"
  else
    expect follow "data check: 6 samples read by 1 replicas x 4 SP ranks" &&
      expect follow "0 mismatches against $follow.full: PASS" && ok "follow (reader started first)"
  fi

  # data.consume: each rank removes the objects it read; none may remain.
  cp -r "$store" "$out/consume"
  cp -r "$store.full" "$out/consume.full"
  check consume 4 0 "$out/consume" --set data.consume=true && expect consume "PASS" && {
    left=$(find "$out/consume" -maxdepth 1 -name '*_usp*' | wc -l)
    if [ "$left" != 0 ]; then fail consume "$left objects left after data.consume" ""; else ok consume; fi
  }
else
  clean=$out/clean
  synth "$clean" 8
  M=manifest.jsonl
  # error_case NAME MESSAGE SETUP: SETUP edits a copy of the clean store ($s); then fail and skip.
  error_case() {
    local name=$1 message=$2 setup=$3 np=${4:-4}
    s=$out/$name
    cp -r "$clean" "$s"
    cp -r "$clean.full" "$s.full"
    eval "$setup"
    check "${name}_fail" "$np" 2 "$s" --set data.on_error=fail &&
      expect "${name}_fail" "$message" && ok "${name}_fail ($np ranks exit 2): $message"
    # (With 8 ranks the neutralising group's warning is only in its ranks' logs, not on rank 0's
    # console; the count still comes back through the world reduction.)
    check "${name}_skip" "$np" 0 "$s" --set data.on_error=skip &&
      expect "${name}_skip" "neutralised: 1 for errors (data.on_error=skip)" &&
      expect "${name}_skip" "SP ranks agree: yes; 0 mismatches" &&
      { [ "$np" != 4 ] || expect "${name}_skip" "${message#data: }"; } &&
      ok "${name}_skip (neutralised, counted, all ranks agree)"
  }
  error_case corrupt \
    "data: sample synth1_000003 (manifest $out/corrupt/$M:4): object synth1_000003_usp2_lhs has 100 bytes, expected" \
    'truncate -s 100 "$s/synth1_000003_usp2_lhs"'
  error_case corrupt_dp2 \
    "object synth1_000003_usp2_lhs has 100 bytes, expected" \
    'truncate -s 100 "$s/synth1_000003_usp2_lhs"' 8
  error_case missing \
    "object synth1_000005_usp1_hs is not in the dir store (consumed by an earlier run with data.consume=true, or never written) (SP rank 1, world rank 1; expected" \
    'rm "$s/synth1_000005_usp1_hs"'
  error_case bad_line \
    "manifest $out/bad_line/$M:2: field \"seq_len\" must be an integer, got string \"many\"" \
    'sed -i "2s/\"seq_len\":[0-9]*/\"seq_len\":\"many\"/" "$s/$M"'
  error_case not_json \
    "manifest $out/not_json/$M:6: not valid JSON" \
    'sed -i "6s/}}\$/}/" "$s/$M"'
  error_case sp_size \
    "manifest $out/sp_size/$M:3: sample synth1_000002: sp_size=2 differs from this run's parallel.ulysses*parallel.ring=4" \
    'sed -i "3s/\"sp_size\":4/\"sp_size\":2/" "$s/$M"'
fi

echo "data_checks $mode: $((cases - failures)) of $cases passed"
[ "$failures" = 0 ] && echo "data_checks $mode: PASS"
[ "$failures" = 0 ]
