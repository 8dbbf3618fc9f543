# Waiting for idle CPUs before a measurement, shared by the bench scripts (sourced, not run).
# Reads QUIET_IDLE (% idle wanted) and QUIET_MAX (longest wait in s; 0: no wait, no sampling).

# cpu_idle_pct: the CPUs' idle % (idle + iowait) over half a second, from /proc/stat.
cpu_idle_pct() {
  local a b total=0 i
  a=($(head -1 /proc/stat)); sleep 0.5; b=($(head -1 /proc/stat))
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (b[4] - a[4] + b[5] - a[5]) / total : 100 ))
}

# wait_for_idle: samples until the CPUs are at least QUIET_IDLE % idle or QUIET_MAX s have
# passed; prints the last idle % seen ("NN%", or "n/a" when QUIET_MAX is 0).
wait_for_idle() {
  local start=$SECONDS idle
  if (( ${QUIET_MAX:-0} <= 0 )); then echo n/a; return; fi
  while :; do
    idle=$(cpu_idle_pct)
    (( idle >= QUIET_IDLE || SECONDS - start >= QUIET_MAX )) && break
  done
  echo "$idle%"
}
