#!/usr/bin/env bash
# Builds the "apps" guest for the benchmark matrix: a real Debian 12 root filesystem made with
# debootstrap (minbase + redis-server, redis-tools, postgresql-15, zstd), trimmed of docs and
# locales, with a PostgreSQL cluster initialised at build time and scripts/guest/apps-init as
# /init, packed as an initramfs (the whole root lives in guest RAM: no disk, nothing shared
# between the two QEMUs but the migration stream). The kernel is the small guest's
# (scripts/guest/build.sh). Cached under .cache/guest-apps/<hash>/; stable path for users:
#   .cache/guest-apps/initramfs.cpio.gz
# Needs root (debootstrap, chroot) and the Debian archive (apt's configured mirror).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="$root/.cache/guest-apps"
mkdir -p "$cache"

suite=bookworm
packages=redis-server,redis-tools,postgresql-15,zstd,procps
# The Debian mirror apt already uses (deb822 or one-line sources; not -security, not others).
mirror="$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true; } |
          grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | tr -d ' ' | head -1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

key="$( { cat "$here/build-apps.sh" "$here/apps-init" "$here/kvload.c" "$here/ticker.c"; echo "$suite $packages"; } |
        sha256sum | cut -c1-16)"
out="$cache/$key"
if [[ -f $out/done ]]; then
  ln -sfn "$key/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
  echo "guest-apps: cached $out"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "build-apps.sh: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null ||
  { echo "build-apps.sh: debootstrap missing (scripts/setup.sh installs it)" >&2; exit 1; }

tmp="$(mktemp -d "$cache/tmp.XXXXXX")"
cleanup() { umount -l "$tmp/rootfs/proc" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
rfs="$tmp/rootfs"

# The downloaded .debs are kept between builds (an edit of apps-init does not download again).
mkdir -p "$cache/debs"
echo "guest-apps: debootstrap $suite ($packages) from $mirror ..."
debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
  "$suite" "$rfs" "$mirror" > "$tmp/debootstrap.log" 2>&1 ||
  { tail -20 "$tmp/debootstrap.log" >&2; echo "build-apps.sh: debootstrap failed" >&2; exit 1; }

# A PostgreSQL cluster with pgbench's tables (scale 4, ~60 MB) in the image: the guest only
# starts the server (initdb and pgbench -i take a minute under TCG).
mount -t proc proc "$rfs/proc"
chroot "$rfs" /bin/sh -c '
  set -e
  rm -rf /var/lib/postgresql/15/main
  mkdir -p /var/lib/postgresql/db && chown postgres:postgres /var/lib/postgresql/db
  su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/db -A trust -E UTF8 --locale=C.UTF-8 >/dev/null"
  printf "%s\n" "listen_addresses = '"''"'" "unix_socket_directories = '"'/run/postgresql'"'" \
    "shared_buffers = 64MB" "fsync = off" "synchronous_commit = off" "full_page_writes = off" \
    "min_wal_size = 32MB" "max_wal_size = 128MB" "jit = off" >> /var/lib/postgresql/db/postgresql.conf
  mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql
  su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/db -l /tmp/pg.log -w start >/dev/null"
  su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pgbench -i -q -s 4 postgres >/dev/null 2>&1"
  # A checkpoint lets the server drop the WAL of the initial load (less guest RAM to carry).
  su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/psql -q -h /run/postgresql -c CHECKPOINT -c CHECKPOINT postgres >/dev/null"
  su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/db -w stop >/dev/null"
  rm -f /tmp/pg.log
'
umount "$rfs/proc"

# Trim what a guest never reads (docs, man pages, locales, apt and dpkg state, caches).
rm -rf "$rfs"/usr/share/{doc,man,info,locale,i18n,lintian} "$rfs"/var/cache/* \
       "$rfs"/var/lib/apt/lists/* "$rfs"/usr/share/postgresql/15/man
# ... and what the three applications never load: PostgreSQL's JIT (LLVM, z3, bitcode; jit is
# off), perl (only Debian's pg_ctlcluster wrappers need it; /init calls pg_ctl directly) and
# the iconv modules. About 170 MB less guest RAM to carry.
rm -rf "$rfs"/usr/lib/x86_64-linux-gnu/{libLLVM-*,libz3.*,perl,perl-base,perl5,gconv} \
       "$rfs"/usr/lib/postgresql/15/lib/bitcode "$rfs"/usr/lib/postgresql/15/lib/llvmjit* \
       "$rfs"/usr/share/perl "$rfs"/usr/share/perl5
install -m 0755 "$here/apps-init" "$rfs/init"
gcc -static -O2 -Wall -Wextra -o "$rfs/usr/local/bin/kvload" "$here/kvload.c"
strip "$rfs/usr/local/bin/kvload"
gcc -static -O2 -Wall -Wextra -o "$rfs/usr/local/bin/ticker" "$here/ticker.c"
strip "$rfs/usr/local/bin/ticker"
rm -f "$rfs/sbin/init"

mkdir -p "$out.new"
(cd "$rfs" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -6 -n \
  > "$out.new/initramfs.cpio.gz"
du -sm "$rfs" | awk '{print $1 " MiB unpacked"}' > "$out.new/size"
touch "$out.new/done"
rm -rf "$out"
mv "$out.new" "$out"
ln -sfn "$key/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
for d in "$cache"/*/; do
  d="${d%/}"; b="$(basename "$d")"
  [[ $b == "$key" || $b == debs || $b == tmp.* ]] || rm -rf "$d"
done
echo "guest-apps: built $out ($(cat "$out/size"))"
