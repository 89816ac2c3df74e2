#!/usr/bin/env bash
# Starts or stops a Mooncake master on loopback for one machine's runs and tests, plus (unless
# --segment 0) a `mooncake_client` that lends memory to the store so objects outlive the producer.
#   scripts/mooncake_master.sh start [--dir DIR] [--port 50051] [--metadata-port 8090]
#                                    [--admin-port 9003] [--client-port 50052] [--segment 512MB]
#                                    [--python PY]
#   scripts/mooncake_master.sh stop [--dir DIR]
#   scripts/mooncake_master.sh status [--dir DIR]
# Everything binds to / advertises 127.0.0.1 (MC_TCP_BIND_ADDRESS=127.0.0.1: see the loopback trap
# in docs/MOONCAKE.md). DIR (default ${TMPDIR:-/tmp}/eaglet-mooncake) holds master.pid,
# client.pid and their logs. `start` waits until the master's RPC port, its HTTP metadata server
# (/health) and the memory holder answer (30 s at most) and fails with the log tail otherwise.
# `stop` ends exactly the processes of those pid files (TERM, then KILL after 10 s).
# Clients then use: master 127.0.0.1:PORT, metadata http://127.0.0.1:METADATA_PORT/metadata.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "[mooncake] $*"; }
die() {
  echo "[mooncake] ERROR: $*" >&2
  exit 1
}

action=${1:-}
[ $# -gt 0 ] && shift
dir=${TMPDIR:-/tmp}/eaglet-mooncake port=50051 meta_port=8090 admin_port=9003 client_port=50052
segment=512MB python=""
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "option $1 needs a value"
  case $1 in
    --dir) dir=$2 ;;
    --port) port=$2 ;;
    --metadata-port) meta_port=$2 ;;
    --admin-port) admin_port=$2 ;;
    --client-port) client_port=$2 ;;
    --segment) segment=$2 ;;
    --python) python=$2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
  shift 2
done

# pid_alive FILE NAME: the pid in FILE runs a program called NAME (not a recycled pid).
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

# running PIDFILE: the process exists and has not exited (a zombie has). Used while a just-started
# process may not have exec'd its binary yet, when its command line is still this script's.
running() {
  local pid state
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

stop_one() {  # stop_one NAME
  local file=$dir/$1.pid pid
  if ! pid_alive "$file" "$1"; then
    rm -f "$file"
    return 0
  fi
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$1 (pid $pid) ignored TERM for 10 s: KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  say "stopped $1 (pid $pid)"
}

case $action in
  start)
    if [ -z "$python" ]; then
      if [ -s "$root/.eaglet_python" ]; then python=$(cat "$root/.eaglet_python"); else python=python3; fi
    fi
    pkg=$("$python" -c 'import mooncake, os; print(os.path.dirname(mooncake.__file__))' 2>/dev/null) ||
      die "$python cannot import mooncake: pip install mooncake-transfer-engine-non-cuda (scripts/setup.sh does)"
    [ -x "$pkg/mooncake_master" ] || die "no mooncake_master in $pkg"
    mkdir -p "$dir"
    export MC_TCP_BIND_ADDRESS=127.0.0.1 GLOG_logtostderr=1
    if pid_alive "$dir/master.pid" mooncake_master; then
      say "master already running (pid $(cat "$dir/master.pid"))"
    else
      "$pkg/mooncake_master" --rpc_address=127.0.0.1 --rpc_port="$port" \
        --enable_http_metadata_server=true --http_metadata_server_host=127.0.0.1 \
        --http_metadata_server_port="$meta_port" --metrics_host=127.0.0.1 --metrics_port="$admin_port" \
        --default_kv_lease_ttl=5000 --eviction_high_watermark_ratio=0.9 --eviction_ratio=0.05 \
        --enable_metric_reporting=false </dev/null >"$dir/master.log" 2>&1 &
      echo $! >"$dir/master.pid"
      for i in $(seq 300); do
        running "$dir/master.pid" ||
          { tail -20 "$dir/master.log" >&2; rm -f "$dir/master.pid"; die "the master exited (log: $dir/master.log); is port $port, $meta_port or $admin_port taken?"; }
        if port_open "$port" &&
          [ "$(curl -s -m 2 "http://127.0.0.1:$meta_port/health" 2>/dev/null)" = OK ]; then
          break
        fi
        [ "$i" = 300 ] && { tail -20 "$dir/master.log" >&2; stop_one master; die "the master did not answer within 30 s"; }
        sleep 0.1
      done
      say "master up (pid $(cat "$dir/master.pid")): 127.0.0.1:$port, metadata http://127.0.0.1:$meta_port/metadata"
    fi
    if [ "$segment" != 0 ]; then
      if pid_alive "$dir/client.pid" mooncake_client; then
        say "memory holder already running (pid $(cat "$dir/client.pid"))"
      else
        "$pkg/mooncake_client" --host=127.0.0.1 --port="$client_port" \
          --global_segment_size="$segment" --local_buffer_size=0 --protocol=tcp \
          --master_server_address="127.0.0.1:$port" \
          --metadata_server="http://127.0.0.1:$meta_port/metadata" </dev/null >"$dir/client.log" 2>&1 &
        echo $! >"$dir/client.pid"
        for i in $(seq 300); do
          running "$dir/client.pid" ||
            { tail -20 "$dir/client.log" >&2; rm -f "$dir/client.pid"; die "the memory holder exited (log: $dir/client.log); is port $client_port taken?"; }
          port_open "$client_port" && grep -q "Mounting segment" "$dir/client.log" && break
          [ "$i" = 300 ] && { tail -20 "$dir/client.log" >&2; stop_one client; die "the memory holder did not start within 30 s"; }
          sleep 0.1
        done
        say "memory holder up (pid $(cat "$dir/client.pid")): $segment lent to the store"
      fi
    fi
    ;;
  stop)
    stop_one client
    stop_one master
    ;;
  status)
    for name in master client; do
      if pid_alive "$dir/$name.pid" "mooncake_$name"; then
        say "$name: running (pid $(cat "$dir/$name.pid"))"
      else
        say "$name: not running"
      fi
    done
    ;;
  *) die "usage: $0 start|stop|status [options] (see the header)" ;;
esac
