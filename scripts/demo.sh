#!/usr/bin/env bash
# The demo migration: sets everything up (scripts/setup.sh: apt packages, guest image, build),
# then migrates a live guest across a 100 Mbit/s tbf-shaped link between two network
# namespaces, once natively (QEMU pre-copy over TCP) and once through ferry (ferry migrate on
# the source side, ferry recv on the destination side), and prints them side by side.
#
#   scripts/demo.sh                 the demo (a few minutes; needs root for the namespaces)
#   scripts/demo.sh --help          options (rate, workload, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) exec python3 scripts/demo.py --help ;; esac
scripts/setup.sh
exec python3 scripts/demo.py "$@"
