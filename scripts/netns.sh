#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, shaped with tc tbf on both directions.
#
#   scripts/netns.sh up NAME RATE [QUEUE [MTU]]
#                                           create NAME-a / NAME-b (10.77.0.1 / 10.77.0.2)
#                                           RATE: tc rate (30mbit, 1gbit, ...) or "none"
#                                           (no netem delay: sch_netem is not in this kernel)
#                                           QUEUE: how long tbf's queue is, as time at the
#                                           rate (default 100ms); a short one (5ms) drops
#                                           what a sender pushes beyond the rate
#                                           MTU: of both veth ends (default 1500; 9000 for
#                                           jumbo frames)
#   scripts/netns.sh down NAME              delete both namespaces (and so the veth pair)
#   scripts/netns.sh stats NAME             tx/rx bytes of each veth end, one line each
#
# NAME: at most 8 characters of [a-z0-9] so the interface names (NAME-va, NAME-vb) fit in
# 15 bytes; pick a unique one per test (rig.py uses "f" + pid/counter digits).
# Link bytes: /sys/class/net/NAME-va/statistics/tx_bytes inside NAME-a, or `stats`.
set -euo pipefail

usage() { sed -n '2,17p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1 name=$2
[[ $name =~ ^[a-z0-9]{1,8}$ ]] || { echo "netns.sh: bad name '$name'" >&2; exit 2; }
nsa="$name-a" nsb="$name-b" va="$name-va" vb="$name-vb"

shape() {  # ns dev rate queue
  local ns=$1 dev=$2 rate=$3 queue=$4
  [[ $rate == none ]] && return 0
  # burst: 10 ms at the rate, at least 32 KiB, so tbf holds the rate at 1 Gbit/s with HZ=250.
  local bps
  bps=$(python3 - "$rate" <<'PY'
import re, sys
m = re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)(bit|bps)', sys.argv[1].lower())
if not m:
    sys.exit("netns.sh: rate must look like 30mbit, 1gbit, 500kbit")
v = float(m.group(1)) * {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m.group(2)]
print(int(v if m.group(3) == 'bit' else v * 8))
PY
)
  local burst=$(( bps / 8 / 100 ))
  (( burst < 32768 )) && burst=32768
  ip netns exec "$ns" tc qdisc add dev "$dev" root handle 10: tbf rate "$rate" \
    burst "$burst" latency "$queue"
}

case $cmd in
  up)
    [[ $# -ge 3 ]] || usage
    rate=$3 queue=${4:-100ms} mtu=${5:-1500}
    [[ $mtu =~ ^[0-9]+$ ]] || { echo "netns.sh: bad MTU '$mtu'" >&2; exit 2; }
    ip netns add "$nsa"
    ip netns add "$nsb" || { ip netns del "$nsa"; exit 1; }
    trap 'ip netns del "$nsa" 2>/dev/null; ip netns del "$nsb" 2>/dev/null' ERR
    ip link add "$va" netns "$nsa" type veth peer name "$vb" netns "$nsb"
    ip -n "$nsa" link set "$va" mtu "$mtu"
    ip -n "$nsb" link set "$vb" mtu "$mtu"
    ip -n "$nsa" addr add 10.77.0.1/30 dev "$va"
    ip -n "$nsb" addr add 10.77.0.2/30 dev "$vb"
    for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
    ip -n "$nsa" link set "$va" up
    ip -n "$nsb" link set "$vb" up
    shape "$nsa" "$va" "$rate" "$queue"
    shape "$nsb" "$vb" "$rate" "$queue"
    echo "netns: $nsa($va 10.77.0.1) <-> $nsb($vb 10.77.0.2) rate=$rate queue=$queue mtu=$mtu"
    ;;
  down)
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    ;;
  stats)
    for pair in "$nsa:$va" "$nsb:$vb"; do
      ns=${pair%%:*} dev=${pair#*:}
      echo "$dev tx_bytes=$(ip netns exec "$ns" cat /sys/class/net/"$dev"/statistics/tx_bytes)" \
        "rx_bytes=$(ip netns exec "$ns" cat /sys/class/net/"$dev"/statistics/rx_bytes)"
    done
    ;;
  *) usage ;;
esac
