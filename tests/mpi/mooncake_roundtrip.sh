#!/usr/bin/env bash
# The mooncake store end to end on loopback: a real master (and a memory holder) started by
# scripts/mooncake_master.sh, scripts/mooncake_producer.py writing samples in eaglet's sharded
# layout (lengths not divisible by P = 4, one longer than max_seq_length, one of a single token;
# T = 3) and saving the exact bytes of every object, then 4 ranks under mpirun that each read only
# their own {key}_usp{rank}_* objects through the C++ mooncake backend and compare the bytes; a
# second pass consumes (removes) them, a third must find them gone; a wrong master address must
# fail fast on every rank. The master is stopped by its pid on every exit path (trap).
# BACKEND=dir runs the same producer -> reader round trip through the dir store (no Mooncake).
# Exit 77 (skip) when PYTHON lacks the mooncake wheel (or numpy, for dir).
# usage: mooncake_roundtrip.sh STORE_READER MPIRUN PYTHON BASE_CONFIG OUT_DIR [mooncake|dir]
set -uo pipefail
reader=$1 mpirun=$2 python=$3 base=$4 out=$5 backend=${6:-mooncake}
root=$(cd "$(dirname "$0")/../.." && pwd)
mc=$out/mooncake

need=numpy
[ "$backend" = mooncake ] && need="numpy, mooncake.store"
if ! timeout 60 "$python" -c "import $need" >/dev/null 2>&1; then
  echo "SKIP: $python cannot import $need (pip install numpy mooncake-transfer-engine-non-cuda)"
  exit 77
fi
rm -rf "$out"
mkdir -p "$out"

failures=0 cases=0
check() {  # check NAME RC EXPECTED_RC LOG [PATTERN]
  cases=$((cases + 1))
  local bad=""
  [ "$2" = 124 ] && bad="timed out"
  [ -z "$bad" ] && [ "$2" != "$3" ] && bad="exit code $2, expected $3"
  [ -z "$bad" ] && [ -n "${5:-}" ] && ! grep -qF -- "$5" "$4" && bad="message not found: $5"
  if [ -n "$bad" ]; then
    failures=$((failures + 1))
    echo "FAIL $1: $bad"
    grep -v '^[IW][0-9]\{4\} ' "$4" | tail -25 | sed 's/^/    /'
  else
    echo "ok   $1"
  fi
}

S=(--config "$base" --set "data.manifest=$out/manifest.jsonl" --set data.max_seq_length=64
  --set training.ttt_length=3 --set parallel.ulysses=2 --set parallel.ring=2
  --set "output_dir=$out/run")
if [ "$backend" = mooncake ]; then
  cleanup() { timeout 60 "$root/scripts/mooncake_master.sh" stop --dir "$mc"; }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
  # Four ports below the kernel's ephemeral range (where the mpirun tests running beside this one
  # take their listeners and connections) and above Mooncake's client range 12300-14300. A start
  # that still loses a port to another process (the master exits 1) is retried on another set.
  read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
  lo=15000 span=$(((eph_lo - 15000) / 4 - 2))
  [ "$span" -ge 100 ] || { lo=61000 span=1000; }
  pick_ports() {
    local try p busy
    for try in $(seq 20); do
      port=$((lo + ((RANDOM * 32768 + RANDOM + $$) % span) * 4))
      busy=0
      for p in $port $((port + 1)) $((port + 2)) $((port + 3)); do port_open $p && busy=1; done
      [ $busy = 0 ] && return 0
    done
  }
  for attempt in 1 2 3; do
    pick_ports
    timeout 90 "$root/scripts/mooncake_master.sh" start --dir "$mc" --python "$python" --port "$port" \
      --metadata-port $((port + 1)) --admin-port $((port + 2)) --client-port $((port + 3)) \
      --segment 256MB >"$out/master.log" 2>&1
    rc=$?
    [ $rc = 0 ] && break
    cp "$out/master.log" "$out/master.try$attempt.log"
    cp "$mc/master.log" "$out/mooncake_master.try$attempt.log" 2>/dev/null
    timeout 60 "$root/scripts/mooncake_master.sh" stop --dir "$mc" >/dev/null 2>&1
  done
  meta=$((port + 1))
  check master_start $rc 0 "$out/master.log" "master up"
  [ $failures = 0 ] || exit 1
  export MC_TCP_BIND_ADDRESS=127.0.0.1 MC_LOG_LEVEL=WARNING
  sink=(--master "127.0.0.1:$port" --metadata "http://127.0.0.1:$meta/metadata")
  S+=(--set data.store=mooncake --set "data.mooncake_master=127.0.0.1:$port"
    --set "data.mooncake_metadata=http://127.0.0.1:$meta/metadata")
else
  sink=(--dir "$out/store")
  S+=(--set data.store=dir --set "data.path=$out/store")
fi

timeout 120 "$python" "$root/scripts/mooncake_producer.py" --manifest "$out/manifest.jsonl" \
  --sp-size 4 --ttt-length 3 --max-seq-length 64 --hidden-size 16 --lengths 37,50,13,70,1 \
  "${sink[@]}" --dump "$out/expected" >"$out/producer.log" 2>&1
check producer $? 0 "$out/producer.log" "5 samples, 60 objects"

timeout 300 "$mpirun" -np 4 "$reader" "${S[@]}" --expect "$out/expected" >"$out/read.log" 2>&1
check read_own_shards $? 0 "$out/read.log" "0 failed: PASS"

timeout 300 "$mpirun" -np 4 "$reader" "${S[@]}" --expect "$out/expected" --consume \
  >"$out/consume.log" 2>&1
check consume $? 0 "$out/consume.log" "0 failed: PASS"

# Consumed: a third read must find the objects gone (and fail, naming them).
timeout 300 "$mpirun" -np 4 "$reader" "${S[@]}" --expect "$out/expected" >"$out/gone.log" 2>&1
rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && rc=1
# Any rank may be the first to report (mpirun then ends the others): no rank is named.
check objects_gone_after_consume $rc 1 "$out/gone.log" "_hs: size -1 != expected"

if [ "$backend" = mooncake ]; then
  # No master there: a clear error within seconds on every rank, not Mooncake's 90 s of retries.
  timeout 60 "$mpirun" -np 4 sh -c '"$0" "$@"; echo "EXIT rank=$OMPI_COMM_WORLD_RANK code=$?"' \
    "$reader" "${S[@]}" --set "data.mooncake_master=127.0.0.1:$((port + 5))" \
    --expect "$out/expected" >"$out/no_master.log" 2>&1
  rc=$?
  exits=$(grep -c "^EXIT rank=[0-9]* code=2$" "$out/no_master.log")
  [ $rc != 124 ] && rc=$([ "$exits" = 4 ] && echo 0 || echo 1)
  check no_master_fails_fast $rc 0 "$out/no_master.log" \
    "data.mooncake_master=127.0.0.1:$((port + 5)): cannot reach the Mooncake master"
fi

echo "$backend roundtrip: $((cases - failures)) passed, $failures failed"
[ $failures = 0 ]
