#!/bin/sh
# ferry with resuming off (--resume-within 0) on send and recv, for benchmarks that measure
# what resuming costs: scripts/bench/throughput.py --ferry off=scripts/bench/ferry-resume-off.sh
# FERRY: the binary (default build/apps/ferry of this tree).
here=$(dirname "$0")
ferry=${FERRY:-$here/../../build/apps/ferry}
cmd=$1
shift
case "$cmd" in
  send | recv) exec "$ferry" "$cmd" --resume-within 0 "$@" ;;
  *) exec "$ferry" "$cmd" "$@" ;;
esac
