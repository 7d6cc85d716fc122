// dataplane/dpdk/dpdk_device.cc — the device's control path: EAL arguments and set-up, the
// port and its queues, flows and listeners, ARP resolution, the watcher thread. The per-packet
// code is in dpdk_datapath.cc.
#include "dataplane/dpdk/internal/dpdk_device.h"

#include <dirent.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <rte_dev.h>
#include <rte_devargs.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "dataplane/dpdk/dpdk_settings.h"
#include "dataplane/protocol.h"

namespace ferry::dataplane::dpdk {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool has_arg(const std::vector<std::string>& args, std::initializer_list<const char*> names) {
  for (const auto& a : args) {
    for (const char* n : names) {
      const size_t len = std::strlen(n);
      if (a.compare(0, len, n) == 0 && (a.size() == len || a[len] == '=')) return true;
    }
  }
  return false;
}

// 2 MiB hugepages free for this process to map (HugePages_Free in /proc/meminfo).
long free_hugepages() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  long value = 0;
  while (in >> key >> value) {
    if (key == "HugePages_Free:") return value;
    in.ignore(256, '\n');
  }
  return 0;
}

// The EAL's argv: the operator's arguments, plus what a ferry process needs unless they say
// otherwise. One lcore, this thread's first CPU (ferry's threads are its own, not EAL
// workers); its own file prefix (two ferries on one host, as in the tests, must not share
// DPDK's runtime files); hugepages when enough are free, else plain memory (--no-huge);
// no telemetry socket; EAL's notices quiet (ferry prints its own one-line errors).
std::vector<std::string> eal_argv(const std::string& user) {
  std::vector<std::string> args{"ferry"};
  std::istringstream words(user);
  for (std::string w; words >> w;) args.push_back(w);
  if (!has_arg(args, {"-l", "-c", "--lcores"})) {
    cpu_set_t set;
    CPU_ZERO(&set);
    int cpu = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
      while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set)) ++cpu;
    }
    args.push_back("-l");
    args.push_back(std::to_string(cpu));
  }
  if (!has_arg(args, {"--file-prefix", "--in-memory"})) {
    args.push_back("--file-prefix=ferry" + std::to_string(::getpid()));
  }
  if (!has_arg(args, {"--no-huge", "-m", "--socket-mem", "--in-memory"})) {
    // 256 pages = 512 MiB: the mbuf pool and rings fit with room to spare.
    if (free_hugepages() < 256) args.insert(args.end(), {"--no-huge", "-m", "512"});
  }
  if (!has_arg(args, {"--telemetry", "--no-telemetry"})) args.push_back("--no-telemetry");
  if (!has_arg(args, {"--log-level"})) args.push_back("--log-level=*:warning");
  return args;
}

// This process's AF_PACKET sockets.
#ifdef AF_XDP
constexpr int kAfXdp = AF_XDP;
#else
constexpr int kAfXdp = 44;  // linux/socket.h
#endif

// This process's sockets of one address family (AF_PACKET, AF_XDP).
std::vector<int> sockets_of(int family) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    if (fd == ::dirfd(d)) continue;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == family) {
      out.push_back(fd);
    }
  }
  ::closedir(d);
  return out;
}

// The AF_PACKET socket of an af_packet port: the one the EAL opened (one queue pair) that is
// bound to the port's interface; -1 if that is not exactly one socket.
int af_packet_socket(const std::vector<int>& before, uint32_t if_index) {
  int found = -1;
  for (int fd : sockets_of(AF_PACKET)) {
    if (std::find(before.begin(), before.end(), fd) != before.end()) continue;
    sockaddr_ll sll{};
    socklen_t len = sizeof sll;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sll), &len) != 0 ||
        static_cast<uint32_t>(sll.sll_ifindex) != if_index) {
      continue;
    }
    if (found >= 0) return -1;
    found = fd;
  }
  return found;
}

// A device argument of the port ("framesz" of "iface=eth1,framesz=10240"), or fallback.
unsigned devarg(const rte_device* dev, const char* key, unsigned fallback) {
  const rte_devargs* da = dev ? rte_dev_devargs(dev) : nullptr;
  if (!da || !da->args) return fallback;
  std::istringstream in(da->args);
  const std::string want = std::string(key) + "=";
  for (std::string kv; std::getline(in, kv, ',');) {
    if (kv.compare(0, want.size(), want) == 0) {
      return static_cast<unsigned>(std::strtoul(kv.c_str() + want.size(), nullptr, 10));
    }
  }
  return fallback;
}

// The kernel interface's MTU (af_packet's port is a socket on it), or 0.
unsigned interface_mtu(uint32_t if_index) {
  ifreq ifr{};
  if (!if_indextoname(if_index, ifr.ifr_name)) return 0;
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 0;
  const int r = ::ioctl(s, SIOCGIFMTU, &ifr);
  ::close(s);
  return r == 0 ? static_cast<unsigned>(ifr.ifr_mtu) : 0;
}

constexpr uint16_t kRxDesc = 1024;
constexpr uint16_t kTxDesc = 1024;
constexpr size_t kMaxFlows = 16;

std::once_flag g_once;
Device* g_device = nullptr;
Status g_error;

}  // namespace

Result<Device*> Device::get() {
  std::call_once(g_once, [] {
    auto* d = new Device();  // lives until the process exits: DPDK has no second init
    g_error = d->init();
    if (g_error) g_device = d;
  });
  if (!g_device) return g_error;
  return g_device;
}

namespace {

// A pool of mbufs with room for `room` bytes after the headroom, whose objects follow each
// other with no gap: af_xdp. Its PMD (DPDK 22.11) registers the pool's memory as the socket's
// UMEM, sized as object count x object size from the first object. The mempool never lets an
// object cross a page (4 KiB without hugepages), so an object whose size does not divide the
// page leaves a gap in every page, and the last ~40 % of the pool lay outside the UMEM: frames
// built there were counted as sent and never left, and the links stalled after ~25 MB.
// Objects of exactly a power of two (2 KiB at MTU 1500, without the mempool's
// channel-spreading pad) tile the pages; checked, as the PMD relies on it.
Result<rte_mempool*> packed_pool(unsigned n, size_t room, int socket) {
  const unsigned need = static_cast<unsigned>(sizeof(rte_mbuf) + RTE_PKTMBUF_HEADROOM + room);
  rte_mempool_objsz sz{};
  rte_mempool_calc_obj_size(need, RTE_MEMPOOL_F_NO_SPREAD, &sz);
  unsigned total = 2048;
  while (total < sz.total_size) total *= 2;
  const unsigned elt = total - sz.header_size;
  rte_pktmbuf_pool_private priv{};
  priv.mbuf_data_room_size = static_cast<uint16_t>(elt - sizeof(rte_mbuf));
  priv.mbuf_priv_size = 0;
  rte_mempool* pool = rte_mempool_create(
      "ferry_mbufs", n, elt, 256, sizeof(rte_pktmbuf_pool_private), rte_pktmbuf_pool_init, &priv,
      rte_pktmbuf_init, nullptr, socket, RTE_MEMPOOL_F_NO_SPREAD);
  if (!pool) return pool;
  struct Span {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
  } span;
  rte_mempool_obj_iter(
      pool,
      [](rte_mempool*, void* arg, void* obj, unsigned) {
        auto* s = static_cast<Span*>(arg);
        s->lo = std::min(s->lo, reinterpret_cast<uintptr_t>(obj));
        s->hi = std::max(s->hi, reinterpret_cast<uintptr_t>(obj));
      },
      &span);
  if (span.hi - span.lo != uintptr_t{total} * (n - 1)) {
    rte_mempool_free(pool);
    const std::string size = std::to_string(total);
    return error(ErrorCode::kUnavailable,
                 "dpdk: af_xdp needs a pool whose mbufs follow each other "
                 "with no gap, and this one of " +
                     size + "-byte objects has gaps: give the EAL hugepages");
  }
  return pool;
}

}  // namespace

Status Device::init() {
  const DpdkSettings s = settings();
  if (s.local_ip.empty()) {
    return error(ErrorCode::kInvalidArgument,
                 "dpdk: this end's IPv4 address on the DPDK port is not set: give --dpdk-local "
                 "IPV4 (or FERRY_DPDK_LOCAL)");
  }
  auto ip = parse_ipv4(s.local_ip);
  if (!ip) return error(ErrorCode::kInvalidArgument, "dpdk: bad --dpdk-local '" + s.local_ip + "'");
  local_ip_ = *ip;
  if (s.eal_args.empty()) {
    return error(ErrorCode::kInvalidArgument,
                 "dpdk: no EAL arguments: give --dpdk-args \"...\" (or FERRY_DPDK_ARGS) naming the "
                 "port, e.g. \"--no-pci --vdev net_af_packet0,iface=eth1\"");
  }

  std::vector<std::string> args = eal_argv(s.eal_args);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // rte_eal_init pins the calling thread to the main lcore, and threads started from it
  // later (the channels) would inherit that: give the thread its CPUs back.
  cpu_set_t saved;
  const bool have_saved = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
  const std::vector<int> sockets_before = sockets_of(AF_PACKET);
  const int r = rte_eal_init(static_cast<int>(args.size()), argv.data());
  if (have_saved) pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  if (r < 0) {
    return error(ErrorCode::kUnavailable, std::string("dpdk: EAL set-up failed (") +
                                              rte_strerror(rte_errno) + ") with arguments '" +
                                              s.eal_args + "'");
  }
  bool found = false;
  uint16_t pid;
  RTE_ETH_FOREACH_DEV(pid) {
    port_id_ = pid;
    found = true;
    break;
  }
  if (!found) {
    return error(ErrorCode::kUnavailable,
                 "dpdk: the EAL arguments give no port: add a --vdev (net_af_packet0,iface=IF or "
                 "net_memif0,...) or allow a PCI device bound with dpdk-devbind.py");
  }
  rte_eth_dev_info info;
  if (int e = rte_eth_dev_info_get(port_id_, &info); e != 0) {
    return error(ErrorCode::kIo, std::string("dpdk: port info: ") + rte_strerror(-e));
  }
  name_ = info.driver_name ? info.driver_name : "port";
  char dev_name[RTE_ETH_NAME_MAX_LEN];
  if (rte_eth_dev_get_name_by_port(port_id_, dev_name) == 0) name_ = dev_name;

  // The MTU: --dpdk-mtu, else what the port reports. memif and af_packet report the limits
  // of a 1518-byte frame (ethdev refuses a larger MTU for them) but carry more: memif what
  // one of its buffers (bsize) holds, af_packet what its kernel interface's MTU and its ring's
  // frames (framesz) allow; port_geometry checks those.
  PortLimits limits;
  limits.name = name_;
  if (info.driver_name && std::strstr(info.driver_name, "memif")) {
    limits.kind = PortLimits::Kind::kMemif;
    limits.memif_buffer = devarg(info.device, "bsize", limits.memif_buffer);
  } else if (info.driver_name && std::strstr(info.driver_name, "af_packet")) {
    limits.kind = PortLimits::Kind::kAfPacket;
    limits.afp_frame = devarg(info.device, "framesz", limits.afp_frame);
    limits.if_mtu = interface_mtu(info.if_index);
  }
  uint16_t reported = RTE_ETHER_MTU;
  rte_eth_dev_get_mtu(port_id_, &reported);
  limits.reported_mtu = reported;
  limits.requested_mtu = s.mtu;
  auto geometry = port_geometry(limits);
  if (!geometry) return geometry.status();
  const size_t room = geometry->mbuf_room;
  mtu_ = geometry->mtu;
  max_datagram_ = geometry->max_datagram;

  // The pool: the rings of the port, and a ring per flow deep enough for two of the largest
  // frames reliable/ sends (its rx pool grants whole frames), for up to kMaxFlows flows.
  const size_t per_frame = (kFrameHeaderSize + kMaxPayload) / max_datagram_ + 1;
  ring_size_ = 1;
  while (ring_size_ < 2 * per_frame) ring_size_ <<= 1;
  const unsigned n_mbufs = static_cast<unsigned>(kRxDesc + kTxDesc + kMaxFlows * ring_size_ + 2048);
  if (info.driver_name && std::strstr(info.driver_name, "af_xdp")) {
    auto pool = packed_pool(n_mbufs, room, rte_eth_dev_socket_id(port_id_));
    if (!pool) return pool.status();
    pool_ = *pool;
  } else {
    pool_ = rte_pktmbuf_pool_create("ferry_mbufs", n_mbufs, 256, 0,
                                    static_cast<uint16_t>(RTE_PKTMBUF_HEADROOM + room),
                                    rte_eth_dev_socket_id(port_id_));
  }
  if (!pool_) {
    return error(ErrorCode::kUnavailable, "dpdk: cannot make a pool of " + std::to_string(n_mbufs) +
                                              " mbufs: " + rte_strerror(rte_errno) +
                                              " (give the EAL more memory, -m)");
  }

  rte_eth_conf conf{};
  if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) {
    conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
    tx_ip_cksum_ = true;
  }
  if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM) {
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
    rx_ip_cksum_ = true;
  }
  // Rx interrupts where the PMD has them (memif, af_xdp, most NICs): an fd that becomes
  // readable when datagrams arrive, for links and the watcher to sleep on. af_packet has
  // none: the watcher polls.
  conf.intr_conf.rxq = 1;
  if (rte_eth_dev_configure(port_id_, 1, 1, &conf) != 0) {
    conf.intr_conf.rxq = 0;
    if (int e = rte_eth_dev_configure(port_id_, 1, 1, &conf); e != 0) {
      return error(ErrorCode::kIo, "dpdk: configuring " + name_ + ": " + rte_strerror(-e));
    }
  }
  if (s.mtu && s.mtu != reported && limits.kind == PortLimits::Kind::kOther) {
    const int e = rte_eth_dev_set_mtu(port_id_, static_cast<uint16_t>(s.mtu));
    if (e != 0) {
      return error(
          ErrorCode::kInvalidArgument,
          "dpdk: " + name_ + " refuses MTU " + std::to_string(s.mtu) + ": " + rte_strerror(-e));
    }
  }
  uint16_t nb_rx = kRxDesc, nb_tx = kTxDesc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &nb_rx, &nb_tx);
  const int socket = rte_eth_dev_socket_id(port_id_);
  if (int e = rte_eth_rx_queue_setup(port_id_, 0, nb_rx, socket < 0 ? 0 : socket, nullptr, pool_);
      e != 0) {
    std::string why = "dpdk: rx queue of " + name_ + ": " + rte_strerror(-e);
    if (info.driver_name && std::strstr(info.driver_name, "af_xdp")) {
      // The kernel refuses XDP on an interface whose frames do not fit a page (a veth checks
      // its peer's MTU); libxdp's own line above says "Numerical result out of range" then.
      why += " (af_xdp: the kernel refused its XDP program or socket on interface MTU " +
             std::to_string(interface_mtu(info.if_index)) +
             "; frames must fit a page: an MTU of 3500 or less, on both ends of a veth)";
    }
    return error(ErrorCode::kIo, why);
  }
  if (int e = rte_eth_tx_queue_setup(port_id_, 0, nb_tx, socket < 0 ? 0 : socket, nullptr);
      e != 0) {
    return error(ErrorCode::kIo, "dpdk: tx queue of " + name_ + ": " + rte_strerror(-e));
  }
  if (int e = rte_eth_dev_start(port_id_); e != 0) {
    return error(ErrorCode::kIo, "dpdk: starting " + name_ + ": " + rte_strerror(-e));
  }
  if (conf.intr_conf.rxq && rte_eth_dev_rx_intr_enable(port_id_, 0) == 0) {
    rx_intr_fd_ = rte_eth_dev_rx_intr_ctl_q_get_fd(port_id_, 0);
  }
  if (rx_intr_fd_ < 0 && info.driver_name && std::strstr(info.driver_name, "af_xdp")) {
    // DPDK 22.11's af_xdp has no rx interrupt, but its XSK socket (the one this process
    // has) is readable while its rx ring holds frames: links and the watcher sleep on it.
    // Nothing to read to clear it: draining the ring does.
    const std::vector<int> xsk = sockets_of(kAfXdp);
    if (xsk.size() == 1) {
      rx_intr_fd_ = xsk.front();
      rx_intr_clears_ = false;
    }
  }
  if (info.driver_name && std::strstr(info.driver_name, "af_packet")) {
    // af_packet's tx_burst copies datagrams into the socket's PACKET_MMAP tx ring and kicks
    // the kernel once (sendto, MSG_DONTWAIT). What the kernel does not take then (its socket
    // buffer is full while a qdisc such as tbf holds earlier frames) waits in the ring until
    // the next kick, and the PMD counts it as sent: without one, a link that stops sending
    // (its window full, waiting for the acks of exactly those datagrams) stalls until its
    // retransmit timeout. The PMD does not hand the socket out; it is the one the EAL opened
    // on the port's interface.
    tx_kick_fd_ = af_packet_socket(sockets_before, info.if_index);
  }
  rte_ether_addr mac;
  rte_eth_macaddr_get(port_id_, &mac);
  std::memcpy(local_mac_.data(), mac.addr_bytes, 6);
  next_local_port_ = static_cast<uint16_t>(49152 + std::random_device{}() % 16000);
  watcher_ = std::thread([this] { watch(); });
  watcher_.detach();
  return Status::ok();
}

// While every link sleeps, someone must drain the port. With an rx interrupt fd (memif,
// af_xdp, NICs) the watcher sleeps on it; when it turns readable the links, which sleep on it
// too, get the first 50 us to drain it themselves (no thread hop), and the watcher drains only
// what is still there after that. Without one (af_packet) it polls: every 50 us while
// datagrams flow, every 1 ms when the port has been quiet; each poll hands a batch to the
// links through their eventfds. (af_packet's ring socket would do as a wake fd, but waking a
// link per arrival instead of per batch measured 2-3x slower on the loaded 2-core host.)
// af_packet's transmits need it too: datagrams the kernel did not take at a transmit's kick
// wait in the tx ring, and the watcher kicks it (flush_tx) every 50 us until none wait.
// Never a busy loop: a readable fd that someone else is draining is looked at after a pause.
void Device::watch() {
  prctl(PR_SET_TIMERSLACK, 1000UL);  // 1 us: the default 50 us would stretch every interval
  constexpr int64_t kGrace = 50'000;
  for (;;) {
    const int fd = rx_intr_fd_;
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, 10);  // bounded: a lost wake-up costs 10 ms at most
      if (r > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(kGrace));
      if (r <= 0 || now_ns() - last_poll_ns_.load(std::memory_order_relaxed) >= kGrace) {
        if (poll_rx(nullptr) > 0) counters_.watcher_polls.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    // Frames left in af_packet's tx ring go out now (flush_tx), and every 50 us until the
    // kernel has taken them all.
    const bool tx_waiting = flush_tx();
    const int64_t now = now_ns();
    const bool busy = now - last_rx_ns_.load(std::memory_order_relaxed) < 100'000'000;
    const int64_t interval = busy || tx_waiting ? kGrace : 1'000'000;
    if (now - last_poll_ns_.load(std::memory_order_relaxed) >= interval) {
      if (poll_rx(nullptr) > 0) counters_.watcher_polls.fetch_add(1, std::memory_order_relaxed);
    }
    std::this_thread::sleep_for(std::chrono::nanoseconds(interval));
  }
}

Result<std::shared_ptr<Flow>> Device::open_flow(uint32_t peer_ip, uint16_t peer_port, Mac peer_mac,
                                                uint16_t local_port) {
  auto flow = std::make_shared<Flow>();
  flow->peer_mac = peer_mac;
  flow->event_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (flow->event_fd < 0) return error(ErrorCode::kIo, "dpdk: eventfd failed");
  std::lock_guard lk(rx_mu_);
  if (flows_.size() >= kMaxFlows) {
    ::close(flow->event_fd);
    return error(ErrorCode::kUnavailable,
                 "dpdk: " + std::to_string(kMaxFlows) + " links are open on this port already");
  }
  FlowKey key{peer_ip, peer_port, local_port};
  if (local_port == 0) {
    for (int tries = 0; tries < 16384; ++tries) {
      key.local_port = next_local_port_;
      next_local_port_ = next_local_port_ >= 65535 ? 49152 : next_local_port_ + 1;
      if (!flows_.count(key.packed()) && !listens_.count(key.local_port)) break;
    }
  }
  if (flows_.count(key.packed())) {
    ::close(flow->event_fd);
    return error(ErrorCode::kInvalidArgument, "dpdk: that flow is open already");
  }
  const std::string ring_name = "ferry_flow" + std::to_string(ring_serial_++);
  flow->ring = rte_ring_create(ring_name.c_str(), static_cast<unsigned>(ring_size_), SOCKET_ID_ANY,
                               RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!flow->ring) {
    ::close(flow->event_fd);
    return error(ErrorCode::kUnavailable,
                 std::string("dpdk: cannot make a flow ring: ") + rte_strerror(rte_errno));
  }
  flow->key = key;
  // What the link sleeps on: its own eventfd (the demux queued datagrams for it) and, where
  // the port has one, the rx interrupt fd (datagrams arrived: drain them itself).
  flow->wait_fd = flow->event_fd;
  if (rx_intr_fd_ >= 0) {
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (ep >= 0 && ::epoll_ctl(ep, EPOLL_CTL_ADD, flow->event_fd, &ev) == 0 &&
        ::epoll_ctl(ep, EPOLL_CTL_ADD, rx_intr_fd_, &ev) == 0) {
      flow->wait_fd = ep;
    } else if (ep >= 0) {
      ::close(ep);
    }
  }
  flows_[key.packed()] = flow.get();
  return flow;
}

void Device::close_flow(Flow& flow) {
  {
    std::lock_guard lk(rx_mu_);
    flows_.erase(flow.key.packed());
  }
  rte_mbuf* m[32];
  for (unsigned n;
       (n = rte_ring_sc_dequeue_burst(flow.ring, reinterpret_cast<void**>(m), 32, nullptr)) > 0;) {
    rte_pktmbuf_free_bulk(m, n);
  }
  rte_ring_free(flow.ring);
  flow.ring = nullptr;
  if (flow.wait_fd != flow.event_fd) ::close(flow.wait_fd);
  ::close(flow.event_fd);
  flow.event_fd = flow.wait_fd = -1;
}

Status Device::listen(uint16_t port, bool (*is_first)(std::span<const uint8_t>), int event_fd) {
  std::lock_guard lk(rx_mu_);
  if (listens_.count(port)) {
    return error(ErrorCode::kInvalidArgument,
                 "dpdk: UDP port " + std::to_string(port) + " is listened on already");
  }
  listens_[port] = Listen{is_first, event_fd, {}};
  return Status::ok();
}

void Device::unlisten(uint16_t port) {
  std::lock_guard lk(rx_mu_);
  listens_.erase(port);
}

bool Device::take_pending(uint16_t port, PendingSyn& out) {
  std::lock_guard lk(rx_mu_);
  auto it = listens_.find(port);
  if (it == listens_.end() || it->second.pending.empty()) return false;
  out = std::move(it->second.pending.front());
  it->second.pending.pop_front();
  return true;
}

Result<Mac> Device::resolve(uint32_t peer_ip, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto next_request = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::lock_guard lk(rx_mu_);
      if (auto it = arp_.find(peer_ip); it != arp_.end()) return it->second;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return error(ErrorCode::kTimeout, "no ARP answer from " + format_ipv4(peer_ip) + " on " +
                                            name_ +
                                            " (is ferry recv listening there, and the "
                                            "link up?)");
    }
    if (now >= next_request) {
      // A port whose link is not up yet (memif until its peer connects) takes nothing: ask
      // again as soon as it does, not a whole retry interval later.
      const bool sent = send_arp(ArpOp::kRequest, kBroadcastMac, Mac{}, peer_ip);
      next_request = now + (sent ? std::chrono::milliseconds(200) : std::chrono::milliseconds(1));
    }
    poll_rx(nullptr);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

json::Value Device::stats_json() const {
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  const DeviceCounters& c = counters_;
  return json::Value::object({{"port", name_},
                              {"mtu", mtu_},
                              {"max_datagram", max_datagram_},
                              {"rx_frames", get(c.rx_frames)},
                              {"rx_datagrams", get(c.rx_datagrams)},
                              {"rx_unknown", get(c.rx_unknown)},
                              {"rx_not_ours", get(c.rx_not_ours)},
                              {"rx_malformed", get(c.rx_malformed)},
                              {"rx_ring_full", get(c.rx_ring_full)},
                              {"arp_answered", get(c.arp_answered)},
                              {"tx_datagrams", get(c.tx_datagrams)},
                              {"tx_full", get(c.tx_full)},
                              {"tx_too_big", get(c.tx_too_big)},
                              {"tx_flushes", get(c.tx_flushes)},
                              {"watcher_polls", get(c.watcher_polls)}});
}

}  // namespace ferry::dataplane::dpdk
