# Shell functions shared by bench/comm.sh and bench/comm_quiet.sh (sourced, not run).
# They write scratch files to $OUT_DIR and read:
#   memcpy_rate  the copy-rate program (bench/comm/memcpy_rate.c, or a stand-in with its CLI)
#   c0, c1       the two cores of the memcpy pair; memcpy_secs: seconds each copies (0.5)
#   perftest     the ucx_perftest to run (default: the one on PATH)
#   bg_pids      array of background pids the caller's EXIT trap kills

# memcpy_pair BYTES: two pinned memcpy_rate processes starting at the same instant; prints
# their summed GB/s.
memcpy_pair() {
  local start=$(( $(date +%s%N) + 200000000 ))
  taskset -c "${c0:-0}" "$memcpy_rate" "$1" "${memcpy_secs:-0.5}" "$start" >"$OUT_DIR/m0" &
  local p0=$!
  taskset -c "${c1:-1}" "$memcpy_rate" "$1" "${memcpy_secs:-0.5}" "$start" >"$OUT_DIR/m1" &
  local p1=$!
  wait "$p0" "$p1"
  awk '{s += $2} END {printf "%.3f\n", s}' "$OUT_DIR/m0" "$OUT_DIR/m1"
}

# port_listening PORT: true when something listens on the tcp port.
port_listening() {
  local hex; hex=$(printf ':%04X ' "$1")
  grep -q "$hex[0-9A-F]*:0000 0A" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# ucx_perftest_pair ARGS...: starts a ucx_perftest server on a free port of lo and runs the
# client with ARGS against it (UCX_TLS=tcp); the client's output goes to stdout.
ucx_perftest_pair() {
  local port=$(( 30000 + RANDOM % 20000 )) pt=${perftest:-ucx_perftest}
  while port_listening "$port"; do port=$(( port + 1 )); done
  UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 60 "$pt" -p "$port" >"$OUT_DIR/srv.log" 2>&1 &
  local srv=$!; bg_pids+=("$srv")
  for _ in $(seq 100); do port_listening "$port" && break; sleep 0.05; done
  UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 60 "$pt" 127.0.0.1 -p "$port" "$@" 2>&1
  kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null; bg_pids=()
}

# tag_bw SIZE ITERS: ucx_perftest tag_bw one way over tcp on lo; prints GB/s (1e9), overall.
tag_bw() {
  ucx_perftest_pair -t tag_bw -s "$1" -n "$2" -w 20 -f |
    awk 'NF == 8 && $1 ~ /^[0-9]+$/ {l = $0} END {split(l, f, " "); printf "%.3f\n", f[6] * 1048576 / 1e9}'
}

# tag_bw_two_way SIZE ITERS: two ucx_perftest tag_bw pairs over tcp on lo at the same time,
# one stream each way (the two directions of a 2-rank all_to_all between two hosts, on the
# same cores); prints both streams' GB/s (1e9), overall, the slower first. The slower stream's
# rate is the per-direction rate of both finishing, as an all_to_all's time is.
tag_bw_two_way() {
  local pt=${perftest:-ucx_perftest} ports=() srvs=() clis=() i port=$(( 30000 + RANDOM % 20000 ))
  for i in 0 1; do
    while port_listening "$port"; do port=$(( port + 1 )); done
    UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 60 "$pt" -p "$port" >"$OUT_DIR/srv2.$i.log" 2>&1 &
    srvs+=($!); bg_pids+=($!); ports+=("$port"); port=$(( port + 1 ))
  done
  for _ in $(seq 100); do port_listening "${ports[0]}" && port_listening "${ports[1]}" && break; sleep 0.05; done
  for i in 0 1; do
    UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 60 "$pt" 127.0.0.1 -p "${ports[i]}" -t tag_bw -s "$1" -n "$2" -w 20 -f \
      >"$OUT_DIR/cli2.$i.log" 2>&1 &
    clis+=($!)
  done
  wait "${clis[@]}"
  kill "${srvs[@]}" 2>/dev/null; wait "${srvs[@]}" 2>/dev/null; bg_pids=()
  for i in 0 1; do
    awk 'NF == 8 && $1 ~ /^[0-9]+$/ {l = $0} END {split(l, f, " "); printf "%.3f\n", f[6] * 1048576 / 1e9}' \
      "$OUT_DIR/cli2.$i.log"
  done | sort -g | tr '\n' ' '
  echo
}

# tag_lat: ucx_perftest tag_lat 1 KiB; prints the typical latency in us (its average, which
# includes the scheduling stalls of a loaded host, goes to stderr).
tag_lat() {
  ucx_perftest_pair -t tag_lat -s 1024 -n 2000 -w 100 | awk '$1 == "Final:" {print $3; print $4 > "/dev/stderr"}'
}

source "$(dirname "${BASH_SOURCE[0]}")/../quiet.sh"  # cpu_idle_pct, wait_for_idle

# wait_quiet NAME: waits for idle CPUs (bench/quiet.sh); logs "NAME idle=..% load=.." to
# $OUT_DIR/idle.log. QUIET_MAX=0: no wait, no sampling.
wait_quiet() {
  echo "$1 idle=$(wait_for_idle) load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT_DIR/idle.log"
}
