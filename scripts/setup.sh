#!/usr/bin/env bash
# Installs every Debian package ferry needs (build, tests, QEMU, guest rig), builds the guest
# image (cached) and builds ferry into build/. Idempotent: run it again at any time.
#
#   scripts/setup.sh            install + guest image + build
#   FERRY_SKIP_APT=1 ...        skip the apt step (packages already there)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  g++ meson ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libisal-dev liblz4-dev libzstd-dev liblzma-dev
  # link protection (TLS 1.3, AES-256-GCM) and the test credentials
  # (scripts/make-credentials.sh); tcpdump for the test that the link shows no plaintext
  libssl-dev openssl tcpdump
  # fuzzing (clang + libFuzzer runtime)
  clang libclang-rt-14-dev
  # style check (scripts/check-format.sh, the unit suite's clang_format test)
  clang-format
  # guest rig and integration tests
  qemu-system-x86 qemu-utils busybox-static cpio gzip xz-utils iproute2 python3 util-linux
  gcc libc6-dev binutils dpkg
  # benchmark matrix (scripts/bench.sh): the apps guest and the plots; the loopback
  # throughput benchmark's plain copy and sink (scripts/bench/throughput.py)
  debootstrap python3-matplotlib socat
  # rdma transport (dataplane/rdma): libfabric, fi_info, and rdma-core's verbs stack that
  # libfabric's verbs provider runs on (RoCE/InfiniBand; here the tcp provider runs instead)
  libfabric-dev libfabric-bin rdma-core libibverbs-dev ibverbs-providers
  # the dpdk transport (dataplane/dpdk: built when Meson finds libdpdk) and its tools
  # (dpdk-testpmd for the benchmark's PMD ceiling, dpdk-devbind.py for real NICs)
  dpdk dpdk-dev libdpdk-dev
  # metrics (--metrics): promtool checks a live scrape, a real Prometheus scrapes ferry
  # (tests/integration/test_metrics.py)
  prometheus
  # packaging (packaging/, debian/): systemd for the unit directory (systemd.pc) and
  # `systemd-analyze verify`, bash-completion's loader and groff/man-db for the install
  # tests, debhelper + fakeroot for scripts/build-deb.sh, debootstrap for
  # scripts/check-deb-clean.sh
  systemd bash-completion groff-base man-db debhelper fakeroot dpkg-dev debootstrap
  # libvirt (tests/integration/test_libvirt.py: two private daemons migrate a domain through
  # ferry with virsh migrate --p2p --migrateuri unix://...; docs/OPERATIONS.md "libvirt")
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  # ferry migrate --libvirt (apps/libvirt_source.cc: built when Meson finds libvirt)
  libvirt-dev
  # modprobe, for tcp_bbr below
  kmod
)

need_install=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_install+=("$p")
done
if [[ ${#need_install[@]} -gt 0 && "${FERRY_SKIP_APT:-0}" != 1 ]]; then
  echo "setup: installing ${need_install[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_install[@]}"
fi

# BBR for ferry's tcp links (dataplane/tcp asks for it on each socket: it keeps the
# bottleneck's queue short, so post-copy's requested pages do not wait behind bulk; issue 19).
# Best effort: without the module the host's default stays (a container may not load it).
if ! grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO modprobe tcp_bbr 2>/dev/null ||
    echo "setup: tcp_bbr not loaded: ferry's tcp links keep the host's congestion control"
fi

# Guest image (kernel + busybox initramfs + workload), cached under .cache/guest.
if [[ -x scripts/guest/build.sh ]]; then
  scripts/guest/build.sh
fi

if [[ ! -f build/build.ninja ]]; then
  meson setup build ${FERRY_MESON_ARGS:-}
fi
ninja -C build
echo "setup: ferry built in build/ (binary: build/apps/ferry)"
