#!/usr/bin/env bash
# End-to-end test on two real network stacks: two network namespaces joined by a veth pair
# (10.250.N.1 and 10.250.N.2, visible only inside the namespaces), one sy-run per namespace
# as a user would start one per host, and the comm library between them over UCX tcp.
#
#   netns_e2e.sh SY_RUN CHECK_PROGRAM [RANKS_PER_HOST]
#
# Exit 0: every rank's all_to_all_v / all_reduce check passed and the ranks reached the
# other namespace through the UCX transport. Exit 77 (ctest SKIP_RETURN_CODE): namespaces
# cannot be made here (not root, no iproute2, no CAP_NET_ADMIN). The namespaces and the
# veth pair are always removed (trap), also on failure or timeout.
set -u
sy_run=$1
program=$2
ranks_per_host=${3:-2}

id=$(( $$ % 200 + 20 ))         # keeps names and the subnet unique between concurrent runs
ns_a="sy-e2e-$$-a"
ns_b="sy-e2e-$$-b"
veth_a="sye$$a"                 # interface names must stay under 16 characters
veth_b="sye$$b"
addr_a="10.250.$id.1"
addr_b="10.250.$id.2"
port=$(( 20000 + $$ % 20000 ))
work=$(mktemp -d /tmp/sy-netns-e2e.XXXXXX)

cleanup() {
  [[ -n "${pid_a:-}" ]] && kill "$pid_a" 2>/dev/null
  [[ -n "${pid_b:-}" ]] && kill "$pid_b" 2>/dev/null
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null     # deleting a namespace removes its end of the veth pair
  ip link del "$veth_a" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

skip() { echo "SKIPPED: $*"; exit 77; }
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
ip netns add "$ns_a" 2>"$work/err" || skip "cannot create a network namespace: $(cat "$work/err")"
ip netns add "$ns_b" || skip "cannot create a second network namespace"
ip link add "$veth_a" type veth peer name "$veth_b" 2>"$work/err" || skip "cannot create a veth pair: $(cat "$work/err")"
ip link set "$veth_a" netns "$ns_a" && ip link set "$veth_b" netns "$ns_b" || skip "cannot move the veth ends"
ip -n "$ns_a" addr add "$addr_a/24" dev "$veth_a"
ip -n "$ns_b" addr add "$addr_b/24" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Each "host" sees only its veth (and lo): UCX over tcp on that device, as on a real cluster.
run_host() {  # namespace, veth, node rank
  # UCX_MEM_EVENTS=no: tcp needs no memory hooks, and they crash under the sanitizers.
  ip netns exec "$1" env UCX_TLS=tcp UCX_NET_DEVICES="$2" UCX_MEM_EVENTS=no SWITCHYARD_LOG_LEVEL=debug SWITCHYARD_LOG_SUBSYS=comm \
    "$sy_run" -n "$ranks_per_host" --nnodes 2 --node-rank "$3" --master "$addr_a:$port" --token "$token" \
    --timeout 25 -- "$program"
}
run_host "$ns_a" "$veth_a" 0 >"$work/a.log" 2>&1 &
pid_a=$!
run_host "$ns_b" "$veth_b" 1 >"$work/b.log" 2>&1 &
pid_b=$!
wait "$pid_a"; rc_a=$?
wait "$pid_b"; rc_b=$?
pid_a= pid_b=

echo "--- host A ($ns_a, $addr_a) exit $rc_a"; grep -v '\[comm\] debug' "$work/a.log"
echo "--- host B ($ns_b, $addr_b) exit $rc_b"; grep -v '\[comm\] debug' "$work/b.log"
fail=0
[[ $rc_a -eq 0 && $rc_b -eq 0 ]] || { echo "FAILED: a launcher exited non-zero"; fail=1; }
checks=$(cat "$work/a.log" "$work/b.log" | grep -c ': 0 wrong elements')
[[ $checks -eq $(( 2 * ranks_per_host )) ]] || { echo "FAILED: $checks of $(( 2 * ranks_per_host )) ranks passed"; fail=1; }
# Every rank must have opened the UCX transport to the other namespace's ranks.
ucx=$(cat "$work/a.log" "$work/b.log" | grep -c "ucx: rank [0-9]* connected to $ranks_per_host peers")
[[ $ucx -eq $(( 2 * ranks_per_host )) ]] || { echo "FAILED: $ucx of $(( 2 * ranks_per_host )) ranks connected over UCX"; fail=1; }
[[ $fail -eq 0 ]] && echo "PASSED: $(( 2 * ranks_per_host )) ranks on 2 network namespaces over UCX tcp"
exit $fail
