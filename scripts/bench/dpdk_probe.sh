#!/usr/bin/env bash
# One captured-stream push through `dpdk:` (the stream of scripts/bench/throughput.py), for
# the two details docs/BENCHMARKS.md quotes about the dpdk push:
#
#   scripts/bench/dpdk_probe.sh arp FERRY [N]       memif: when the sender's memif socket
#       connected, when it read its first stream byte (strace -tt of connect and read), N runs
#   scripts/bench/dpdk_probe.sh afp-ring FERRY [N] [DEVARGS]   af_packet on an unshaped veth
#       between two namespaces: the sender's link counters (retransmits: datagrams the
#       receiving kernel's ring dropped) with DEVARGS added to the port (e.g. ",framecnt=2048")
#
# Run as root on an otherwise idle host; the stream must exist (throughput.py makes it).
set -euo pipefail
mode=${1:?mode}; ferry=${2:?ferry binary}; runs=${3:-3}; devargs=${4:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
stream=$root/.cache/throughput/live-800mib.stream
[[ -f $stream ]] || { echo "no $stream: run scripts/bench/throughput.py once" >&2; exit 2; }
port=40000

summary() {  # wd
  python3 - "$1" <<'PY'
import json, sys
wd = sys.argv[1]
s = json.load(open(wd + '/send.json'))
l = s['per_channel'][0]['link']
print('  duration %.3f s, link_setup_s %s, retransmits %d, rx_ring_full at the receiver %d'
      % (s['duration_s'], s.get('link_setup_s'), l['retransmits'],
         json.load(open(wd + '/recv.json'))['per_channel'][0]['link']['dpdk']['rx_ring_full']))
PY
}

push() {  # wd recv-prefix send-prefix recv-args send-args
  local wd=$1
  socat -b 1048576 -u UNIX-LISTEN:"$wd/sink.sock" - > /dev/null &
  while [[ ! -S $wd/sink.sock ]]; do sleep 0.05; done
  $2 "$ferry" recv --listen dpdk:10.77.0.102:$port --qemu unix:"$wd/sink.sock" \
    --stats-json "$wd/recv.json" --quiet --insecure --dpdk-args "$4" 2> "$wd/recv.err" &
  local recv=$!
  # Until the receiver's port is up: memif's listening socket, or (af_packet) a packet
  # socket in its namespace, where nothing else opens one. The sender's ARP retries cover
  # the rest of the receiver's set-up.
  for _ in $(seq 200); do
    if [[ $4 == *af_packet* ]]; then
      (( $(ip netns exec dprobe-b cat /proc/net/packet | wc -l) > 1 )) && break
    else
      grep -q "@$wd/memif.sock" /proc/net/unix && break
    fi
    sleep 0.05  # polling the condition above
  done
  $3 "$ferry" send --stdio --peer dpdk:10.77.0.102:$port --codec none --quiet --insecure \
    --dpdk-local 10.77.0.101 --stats-json "$wd/send.json" --dpdk-args "$5" \
    < "$stream" 2> "$wd/send.err"
  wait $recv
  wait
}

case $mode in
  arp)
    for i in $(seq "$runs"); do
      wd=$(mktemp -d)
      memif="net_memif0,socket=$wd/memif.sock,bsize=2048"
      push "$wd" "" "strace -f -tt -e trace=connect,read -o $wd/strace.txt" \
        "--no-pci --vdev $memif,role=server" "--no-pci --vdev $memif,role=client"
      c=$(grep 'connect(.*memif' "$wd/strace.txt" | awk '{print $2}')
      r=$(grep -m1 'read(0,' "$wd/strace.txt" | awk '{print $2}')
      python3 -c "import sys
t=lambda s: sum(float(x)*m for x, m in zip(s.split(':'), (3600, 60, 1)))
print('run $i: memif connect %s, first stream read %s: %.0f ms later' % ('$c', '$r', (t('$r')-t('$c'))*1000))"
      rm -rf "$wd"
    done ;;
  afp-ring)
    "$root/scripts/netns.sh" up dprobe none 100ms 1500 > /dev/null
    trap '"$root/scripts/netns.sh" down dprobe' EXIT
    for i in $(seq "$runs"); do
      wd=$(mktemp -d)
      push "$wd" "ip netns exec dprobe-b" "ip netns exec dprobe-a" \
        "--no-pci --vdev net_af_packet0,iface=dprobe-vb,qdisc_bypass=0$devargs" \
        "--no-pci --vdev net_af_packet0,iface=dprobe-va,qdisc_bypass=0$devargs"
      echo "run $i (devargs '$devargs'):"; summary "$wd"
      rm -rf "$wd"
    done ;;
  *) echo "mode: arp or afp-ring" >&2; exit 2 ;;
esac
