#!/usr/bin/env bash
# Which system calls `ferry recv` makes over whole migrations, against the @system-service set
# that ferry-recv.service allows (SystemCallFilter=). Replays a captured migration stream
# through ferry send --stdio -> ferry recv (under strace -f) -> a socat sink standing in for
# the destination QEMU, on loopback with PSK credentials, once per transport.
#
#   docs/bench/packaging/recv-syscalls.sh FERRY STREAM [TRANSPORT:CODEC ...]
#   (default: tcp:auto udp:fast)
set -euo pipefail
ferry=$(realpath "$1") stream=$2
shift 2
runs=("$@")
[[ ${#runs[@]} -gt 0 ]] || runs=(tcp:auto udp:fast)
here=$(cd "$(dirname "$0")/../../.." && pwd)
wd=$(mktemp -d)
trap 'rm -rf "$wd"' EXIT
"$here/scripts/make-credentials.sh" "$wd/creds" >/dev/null
# @system-service names groups (@aio, @basic-io, ...): expand them to system calls.
expand() {
  local item
  for item in $(systemd-analyze syscall-filter "$1" | awk 'NR > 1 && $1 !~ /^#/ {print $1}'); do
    if [[ $item == @* ]]; then expand "$item"; else echo "$item"; fi
  done
}
allowed=$(expand @system-service | sort -u)
used_all=()
port=47311
for run in "${runs[@]}"; do
  transport=${run%%:*} codec=${run#*:}
  sock=$wd/qemu.sock
  rm -f "$sock"
  socat -u UNIX-LISTEN:"$sock" - >/dev/null &
  sink=$!
  # Counting mode: strace -c prints each call's count once ferry recv exits.
  strace -f -c -U name,calls -o "$wd/strace-$transport" \
    "$ferry" recv --listen "$transport:127.0.0.1:$port" --qemu "unix:$sock" --quiet \
    --tls-psk-file "$wd/creds/keys.psk" --stats-json "$wd/recv-$transport.json" &
  recv=$!
  # ferry send does not retry a refused connection: wait until ferry recv listens.
  kind=t
  [[ $transport == udp ]] && kind=u
  for _ in $(seq 600); do
    ss -Hln$kind "sport = :$port" | grep -q . && break
    kill -0 "$recv" 2>/dev/null || { echo "ferry recv exited before listening"; exit 1; }
    sleep 0.05
  done
  start=$(date +%s.%N)
  "$ferry" send --stdio --peer "$transport:127.0.0.1:$port" --codec "$codec" --quiet \
    --tls-psk-file "$wd/creds/keys.psk" --stats-json "$wd/send-$transport.json" \
    <"$stream" >/dev/null
  rc=0
  wait "$recv" || rc=$?
  wait "$sink" || true
  end=$(date +%s.%N)
  to_qemu=$(stat -c %s "$stream")
  echo "== $transport, --codec $codec: ferry recv exit $rc, $(printf '%.1f' "$(echo "$end - $start" | bc)") s, stream $to_qemu bytes"
  used=$(awk 'NR > 2 && $1 ~ /^[a-z0-9_]+$/ && $1 != "total" {print $1}' "$wd/strace-$transport" | sort -u)
  echo "   calls: $(echo $used)"
  used_all+=($used)
  port=$((port + 1))
done
outside=$(comm -23 <(printf '%s\n' "${used_all[@]}" | sort -u) <(echo "$allowed"))
echo "== outside @system-service: ${outside:-none}"
[[ -z $outside ]]
