#!/usr/bin/env bash
# Installs the Debian package on a clean Debian 12: a minimal bookworm root made with
# debootstrap from Debian's archive (nothing of this host's packages), where apt resolves the
# package's dependencies by itself; then runs the installed ferry there. Proves the package's
# Depends are complete, not just that it installs on a machine that has everything already.
#
#   scripts/check-deb-clean.sh DEB [--root DIR]
#
#   DEB         the package (scripts/build-deb.sh puts it in results/deb/)
#   --root DIR  where the clean root goes (default: a temporary directory, removed after)
# Needs root and debootstrap (scripts/setup.sh), and Debian's archive over the network.
set -euo pipefail
deb= root=
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) root=$2; shift ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) deb=$1 ;;
  esac
  shift
done
if [[ -z $deb || ! -f $deb ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
  true)
mirror=${mirror:-http://deb.debian.org/debian}
if [[ -z $root ]]; then
  root=$(mktemp -d /tmp/ferry-clean-root.XXXXXX)
  trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
fi
echo "check-deb-clean: debootstrap --variant=minbase bookworm $root $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
  { tail -20 "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"
mount -t proc proc "$root/proc"
cp "$deb" "$root/tmp/"
name=$(basename "$deb")
echo "check-deb-clean: packages before: $(chroot "$root" dpkg-query -f '.\n' -W | wc -l)"
chroot "$root" apt-get install -y --no-install-recommends "/tmp/$name" 2>&1 | tail -3
echo "check-deb-clean: packages after: $(chroot "$root" dpkg-query -f '.\n' -W | wc -l)"
echo "check-deb-clean: ferry --version in the clean root:"
chroot "$root" /usr/bin/ferry --version
chroot "$root" /usr/bin/ferry recv --help | head -3
chroot "$root" sh -c 'ls /usr/share/man/man1/ferry* /lib/systemd/system/ferry-recv.service /etc/default/ferry-recv'
umount "$root/proc"
echo "check-deb-clean: ok"
