#!/usr/bin/env bash
# Builds the ferry test guest: Debian's kernel (extracted from the .deb, never installed on the
# host) and an initramfs with busybox-static, /init (scripts/guest/init) and the static
# workload (scripts/guest/workload.c). Idempotent and cached under .cache/guest/<hash>/, the
# hash covering every input, so an edit rebuilds. Stable paths for users:
#   .cache/guest/vmlinuz    .cache/guest/initramfs.cpio.gz
# Needs: gcc (static glibc), busybox-static, cpio, gzip, apt-get/dpkg-deb.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/.cache/guest"
mkdir -p "$cache"

busybox=/bin/busybox
[[ -x $busybox ]] || { echo "build.sh: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }

# The kernel package the metapackage points to (e.g. linux-image-6.1.0-56-amd64).
resolve_kpkg() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
kpkg="$(resolve_kpkg)"
if [[ -z $kpkg ]]; then  # a fresh machine may have no package lists yet
  apt-get update -qq >/dev/null 2>&1 || true
  kpkg="$(resolve_kpkg)"
fi
[[ -n $kpkg ]] || { echo "build.sh: cannot resolve the kernel package from linux-image-amd64" >&2; exit 1; }
kver="$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')"

key="$( { cat "$here/build.sh" "$here/init" "$here/workload.c"; echo "$kpkg $kver";
          sha256sum "$busybox"; gcc --version | head -1; } | sha256sum | cut -c1-16)"
out="$cache/$key"
if [[ -f $out/done ]]; then
  ln -sfn "$key/vmlinuz" "$cache/vmlinuz"
  ln -sfn "$key/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
  echo "guest: cached $out"
  exit 0
fi

tmp="$(mktemp -d "$cache/tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Kernel: reuse a downloaded .deb of the same version if present.
shopt -s nullglob
debs=("$cache/${kpkg}"_*.deb)
deb="${debs[0]:-}"
if [[ -z $deb || $deb != *"${kver//:/%3a}"* ]]; then
  rm -f "$cache"/linux-image-*.deb
  (cd "$tmp" && { apt-get download "$kpkg" >/dev/null 2>&1 ||
                   { apt-get update -qq >/dev/null 2>&1 && apt-get download "$kpkg" >/dev/null 2>&1; }; }) ||
    { echo "build.sh: apt-get download $kpkg failed" >&2; exit 1; }
  mv "$tmp"/*.deb "$cache/"
  debs=("$cache/${kpkg}"_*.deb)
  deb="${debs[0]}"
fi
mkdir -p "$tmp/kpkg"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/kpkg" --wildcards './boot/vmlinuz-*'
mkdir -p "$out.new"
cp "$tmp"/kpkg/boot/vmlinuz-* "$out.new/vmlinuz"

# Initramfs.
ir="$tmp/initramfs"
mkdir -p "$ir"/{bin,dev,proc,sys,tmp}
cp "$busybox" "$ir/bin/busybox"
gcc -static -O2 -Wall -Wextra -o "$ir/workload" "$here/workload.c"
strip "$ir/workload"
install -m 0755 "$here/init" "$ir/init"
mknod -m 600 "$ir/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$ir/dev/null" c 1 3 2>/dev/null || true
(cd "$ir" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -9 -n \
  > "$out.new/initramfs.cpio.gz"

echo "$kpkg $kver" > "$out.new/kernel-version"
touch "$out.new/done"
rm -rf "$out"
mv "$out.new" "$out"
ln -sfn "$key/vmlinuz" "$cache/vmlinuz"
ln -sfn "$key/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
# Keep only the current build.
for d in "$cache"/*/; do
  d="${d%/}"
  [[ "$(basename "$d")" == "$key" ]] || [[ "$(basename "$d")" == tmp.* ]] || rm -rf "$d"
done
echo "guest: built $out ($kpkg $kver)"
