#!/usr/bin/env bash
# Builds the Debian package (debian/) out of tree: copies the working tree's files (tracked
# and new, not ignored ones) to a temporary directory, runs dpkg-buildpackage there and puts
# the .deb into results/deb/ (ignored by git). The repository is left as it was.
#
#   scripts/build-deb.sh [--out DIR] [--check] [--keep]
#
#   --out DIR  where the .deb and .buildinfo/.changes go (default results/deb)
#   --check    also run the unit suite during the build (default: nocheck, it compiles once)
#   --keep     keep the temporary build tree (printed) for a look at it
# Needs the build packages (scripts/setup.sh installs them; dpkg-buildpackage checks).
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/deb check=0 keep=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift ;;
    --check) check=1 ;;
    --keep) keep=1 ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(realpath "$out")
version=$(dpkg-parsechangelog -S Version)
tmp=$(mktemp -d /tmp/ferry-deb.XXXXXX)
if [[ $keep == 1 ]]; then echo "build-deb: build tree in $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
src=$tmp/ferry-$version
mkdir "$src"
# Only files git knows or would add: no build dirs, caches or results.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$src"

jobs=$(($(nproc) < 2 ? $(nproc) : 2))  # the machine is shared: two jobs at most
opts="parallel=$jobs"
profiles=()
if [[ $check == 0 ]]; then
  opts+=" nocheck"
  profiles=(-Pnocheck)
fi
echo "build-deb: ferry $version in $src (DEB_BUILD_OPTIONS='$opts')"
(cd "$src" && DEB_BUILD_OPTIONS=$opts nice dpkg-buildpackage -us -uc -b "${profiles[@]}")
cp "$tmp"/*.deb "$tmp"/*.buildinfo "$tmp"/*.changes "$out"/
for deb in "$tmp"/*.deb; do
  echo "build-deb: $out/$(basename "$deb")"
done
