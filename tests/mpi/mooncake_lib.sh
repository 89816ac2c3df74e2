# Sourced by the Mooncake tests (mooncake_outage.sh, torchspec_dropin.sh): a real mooncake_master
# plus a memory holder on loopback (scripts/mooncake_master.sh), on free ports below the ephemeral
# range, stopped by its pid on every exit path. Needs: src, python, out, and bad() from the caller.
#   mc_start NAME  starts a fresh one (stopping the previous); sets mc (its folder), port, and
#                  mc_set (the --set arguments of data.store=mooncake for it)
#   mc_stop        stops it (also run by the EXIT trap)
export MC_TCP_BIND_ADDRESS=127.0.0.1 MC_LOG_LEVEL=WARNING
mc=""
mc_stop() { [ -n "$mc" ] && timeout 60 "$src/scripts/mooncake_master.sh" stop --dir "$mc" >/dev/null 2>&1; }
trap mc_stop EXIT
trap 'exit 130' INT TERM

# Ports as in mooncake_roundtrip.sh: below the ephemeral range, above Mooncake's client range.
mc_port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
read -r mc_eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || mc_eph_lo=32768
mc_lo=15000 mc_span=$(((mc_eph_lo - 15000) / 4 - 2))
[ "$mc_span" -ge 100 ] || { mc_lo=61000 mc_span=1000; }
mc_start() {
  mc_stop
  mc=$out/$1.mc
  local attempt p busy rc=1
  for attempt in 1 2 3 4 5; do
    port=$((mc_lo + ((RANDOM * 32768 + RANDOM + $$) % mc_span) * 4))
    busy=0
    for p in $port $((port + 1)) $((port + 2)) $((port + 3)); do mc_port_open $p && busy=1; done
    [ $busy = 1 ] && continue
    # (Mooncake's own log level stays at its default here: start waits for the holder's log line)
    env -u MC_LOG_LEVEL timeout 90 "$src/scripts/mooncake_master.sh" start --dir "$mc" --python "$python" --port $port \
      --metadata-port $((port + 1)) --admin-port $((port + 2)) --client-port $((port + 3)) \
      --segment 128MB >"$out/$1.master.log" 2>&1 && { rc=0; break; }
    timeout 60 "$src/scripts/mooncake_master.sh" stop --dir "$mc" >/dev/null 2>&1
  done
  [ $rc = 0 ] || { bad "$1: master did not start"; tail -5 "$out/$1.master.log"; exit 1; }
  mc_set=(--set data.store=mooncake --set "data.mooncake_master=127.0.0.1:$port"
          --set "data.mooncake_metadata=http://127.0.0.1:$((port + 1))/metadata")
}
