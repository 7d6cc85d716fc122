// dataplane/udp/udp_port.cc — control path of the UDP ports: address parsing and resolution,
// socket options, path MTU, the listener that gives each new peer its own connected socket.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/clock.h"
#include "dataplane/udp/udp_port_internal.h"

namespace ferry::dataplane::udp {
namespace {

// How long a closed connection's first datagrams (same address, same id) count as stale
// repeats: longer than a client keeps repeating its SYN.
constexpr uint64_t kForgetClosedNs = 10'000'000'000;
constexpr size_t kMaxUdpPayload = 65536;

Status io_error(const std::string& what, int err = errno) {
  return error(ErrorCode::kIo, what + ": " + std::strerror(err));
}

struct HostPort {
  std::string host, port;
};

// "HOST:PORT", IPv6 hosts in brackets; an empty host means every local address (listen).
Result<HostPort> split(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size()) {
    return error(ErrorCode::kInvalidArgument, "expected udp:HOST:PORT, got udp:" + address);
  }
  HostPort hp{address.substr(0, colon), address.substr(colon + 1)};
  // getaddrinfo takes "99999" and wraps it to a 16-bit port.
  if (hp.port.find_first_not_of("0123456789") == std::string::npos &&
      (hp.port.size() > 5 || std::stoul(hp.port) > 65535)) {
    return error(ErrorCode::kInvalidArgument, "port out of range in udp:" + address);
  }
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  }
  return hp;
}

Result<std::vector<sockaddr_storage>> resolve(const std::string& address, bool passive) {
  auto hp = split(address);
  if (!hp) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const char* host = hp->host.empty() && passive ? nullptr : hp->host.c_str();
  int gai = ::getaddrinfo(host, hp->port.c_str(), &hints, &res);
  if (gai != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "cannot resolve udp:" + address + ": " + ::gai_strerror(gai));
  }
  std::vector<sockaddr_storage> out;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    out.push_back(ss);
  }
  ::freeaddrinfo(res);
  return out;
}

socklen_t addr_len(const sockaddr_storage& a) {
  return a.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

std::string to_string(const sockaddr_storage& a) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (a.ss_family == AF_INET6) {
    const auto& s6 = reinterpret_cast<const sockaddr_in6&>(a);
    ::inet_ntop(AF_INET6, &s6.sin6_addr, text, sizeof text);
    return std::string("[") + text + "]:" + std::to_string(ntohs(s6.sin6_port));
  }
  const auto& s4 = reinterpret_cast<const sockaddr_in&>(a);
  ::inet_ntop(AF_INET, &s4.sin_addr, text, sizeof text);
  return std::string(text) + ":" + std::to_string(ntohs(s4.sin_port));
}

// A v4 peer on a dual-stack IPv6 socket (::ffff:a.b.c.d) still has 20-byte IP headers.
bool has_ipv6_header(const sockaddr_storage& peer) {
  if (peer.ss_family != AF_INET6) return false;
  return !IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr);
}

// Asks for bytes of socket buffer; as root past net.core.[rw]mem_max, else up to it.
void set_buffer(int fd, int force_opt, int opt, size_t bytes) {
  int v = static_cast<int>(std::min<size_t>(bytes, size_t{1} << 30));
  if (::setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) != 0) {
    ::setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
  }
}

// A non-blocking UDP socket with big buffers that never fragments: with DF set, a datagram
// above the path MTU fails with EMSGSIZE here instead of leaving as fragments, any one of
// which lost would cost the whole datagram.
Result<int> open_socket(int family, const PortOptions& options) {
  int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return io_error("udp socket");
  set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, options.socket_buffer);
  set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, options.socket_buffer);
  int v4 = IP_PMTUDISC_DO;
  int rc = ::setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v4, sizeof v4);
  if (family == AF_INET6) {
    // The IPv4 setting above serves v4-mapped peers of a dual-stack socket; it may fail on
    // an IPv6-only host, which is fine.
    int v6 = IPV6_PMTUDISC_DO;
    rc = ::setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof v6);
  }
  if (rc != 0) {
    Status st = io_error("udp: cannot set path MTU discovery");
    ::close(fd);
    return st;
  }
  return fd;
}

Result<std::unique_ptr<UdpPort>> make_port(int fd, const sockaddr_storage& peer,
                                           const PortOptions& options,
                                           std::shared_ptr<PortListener::PeerSlot> slot) {
  sockaddr_storage local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  SocketSetup s;
  s.fd = fd;
  s.ipv6_header = has_ipv6_header(peer);
  s.datagram_cap = options.datagram_cap;
  s.max_datagram = datagram_size_for(fd, s.ipv6_header, options.datagram_cap);
  s.name = "udp " + to_string(local) + " -> " + to_string(peer);
  s.slot = std::move(slot);
  if (options.offload) {
    // Setting a default segment size of 0 (off) is how to ask whether the kernel has GSO.
    int zero = 0, one = 1;
    s.gso = ::setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
    s.gro = ::setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) == 0;
  }
  return std::unique_ptr<UdpPort>(new SocketPort(std::move(s)));
}

}  // namespace

// Accepts only datagrams from `peer`. A per-peer socket is bound (to the listener's address)
// before it is connected; in between, the kernel may deliver another new peer's datagrams to
// it, which after connect() would look like this peer's. cBPF sees the IP header at
// SKF_NET_OFF and the UDP header at offset 0.
Status attach_peer_filter(int fd, const sockaddr_storage& peer) {
  std::vector<sock_filter> prog;
  auto op = [&](uint16_t code, uint32_t k, uint8_t jt = 0, uint8_t jf = 0) {
    prog.push_back(sock_filter{code, jt, jf, k});
  };
  // Each comparison jumps to the final "drop" on mismatch; fixed up once the length is known.
  std::vector<size_t> to_drop;
  auto expect = [&](uint32_t value) {
    to_drop.push_back(prog.size());
    op(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 0);
  };
  op(BPF_LD | BPF_B | BPF_ABS, static_cast<uint32_t>(SKF_NET_OFF));
  op(BPF_ALU | BPF_RSH | BPF_K, 4);
  uint16_t port;
  if (has_ipv6_header(peer)) {
    const auto& s6 = reinterpret_cast<const sockaddr_in6&>(peer);
    expect(6);
    for (int i = 0; i < 4; ++i) {
      uint32_t word;
      std::memcpy(&word, s6.sin6_addr.s6_addr + 4 * i, 4);
      op(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_NET_OFF + 8 + 4 * i));
      expect(ntohl(word));
    }
    port = s6.sin6_port;
  } else {
    uint32_t addr;
    if (peer.ss_family == AF_INET6) {  // v4-mapped: the last four bytes
      std::memcpy(&addr, reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr.s6_addr + 12, 4);
      port = reinterpret_cast<const sockaddr_in6&>(peer).sin6_port;
    } else {
      addr = reinterpret_cast<const sockaddr_in&>(peer).sin_addr.s_addr;
      port = reinterpret_cast<const sockaddr_in&>(peer).sin_port;
    }
    expect(4);
    op(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_NET_OFF + 12));
    expect(ntohl(addr));
  }
  op(BPF_LD | BPF_H | BPF_ABS, 0);  // UDP source port
  expect(ntohs(port));
  op(BPF_RET | BPF_K, 0xffffffffu);  // keep the whole datagram
  const size_t drop = prog.size();
  op(BPF_RET | BPF_K, 0);
  for (size_t at : to_drop) {
    prog[at].jt = 0;
    prog[at].jf = static_cast<uint8_t>(drop - at - 1);
  }
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0) {
    return io_error("udp: cannot attach the peer filter");
  }
  return Status::ok();
}

size_t datagram_size_for(int fd, bool ipv6_header, size_t cap) {
  sockaddr_storage self{};
  socklen_t slen = sizeof self;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &slen);
  // IPV6_MTU also answers for a v4-mapped peer of a dual-stack socket.
  int mtu = 0;
  socklen_t len = sizeof mtu;
  int rc = self.ss_family == AF_INET6 ? ::getsockopt(fd, IPPROTO_IPV6, IPV6_MTU, &mtu, &len)
                                      : ::getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &len);
  // Without a route MTU (it should always be there on a connected socket) assume IPv6's
  // minimum link MTU, which every IPv4 path in practice also carries.
  if (rc != 0 || mtu <= 0) mtu = 1280;
  // An IPv4 packet's length field counts its header, IPv6's does not: 65507 vs 65527 max.
  const size_t size = ipv6_header ? std::min<size_t>(static_cast<size_t>(mtu) - 40, 65535) - 8
                                  : std::min<size_t>(static_cast<size_t>(mtu), 65535) - 20 - 8;
  return cap == 0 ? size : std::min(size, cap);
}

SocketPort::SocketPort(SocketSetup setup) : s_(std::move(setup)) {
  if (s_.gro) gro_buf_.reset(new uint8_t[kGroSlots * kGroSlotBytes]);
}

SocketPort::~SocketPort() {
  ::close(s_.fd);
  if (s_.slot) s_.slot->closed_ns.store(now_ns(), std::memory_order_release);
}

void SocketPort::refresh_mtu() noexcept {
  s_.max_datagram = datagram_size_for(s_.fd, s_.ipv6_header, s_.datagram_cap);
}

Result<std::vector<sockaddr_storage>> resolve(const std::string& address) {
  return resolve(address, false);
}

Result<std::unique_ptr<UdpPort>> connect_port(const sockaddr_storage& peer,
                                              const PortOptions& options) {
  auto fd = open_socket(peer.ss_family, options);
  if (!fd) return fd.status();
  if (::connect(*fd, reinterpret_cast<const sockaddr*>(&peer), addr_len(peer)) != 0) {
    Status st = io_error("cannot connect a udp socket to " + to_string(peer));
    ::close(*fd);
    return st;
  }
  return make_port(*fd, peer, options, nullptr);
}

Result<std::unique_ptr<UdpPort>> connect_port(const std::string& address,
                                              const PortOptions& options) {
  auto peers = resolve(address, false);
  if (!peers) return peers.status();
  return connect_port(peers->front(), options);
}

// ---- listener ------------------------------------------------------------------------------

Result<std::unique_ptr<PortListener>> PortListener::create(const std::string& address,
                                                           const PortOptions& options,
                                                           FirstDatagramCheck check) {
  auto locals = resolve(address, true);
  if (!locals) return locals.status();
  Status last = error(ErrorCode::kIo, "no address for udp:" + address);
  for (sockaddr_storage& local : *locals) {
    // SO_REUSEPORT below would also let a second listener of the same user share the port
    // and silently take half of the new peers; a plain socket's bind says "in use" first, as
    // TCP's listen would (and picks the port when 0 was asked for).
    int probe = ::socket(local.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof local;
    if (probe < 0 ||
        ::bind(probe, reinterpret_cast<const sockaddr*>(&local), addr_len(local)) != 0 ||
        ::getsockname(probe, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
      last = io_error("cannot listen on udp:" + address);
      if (probe >= 0) ::close(probe);
      continue;
    }
    ::close(probe);
    auto fd = open_socket(local.ss_family, options);
    if (!fd) return fd.status();
    int one = 1;
    // SO_REUSEPORT (not SO_REUSEADDR, which for UDP lets any user bind the port too) lets
    // per-peer sockets of the same user share the address; IP(V6)_PKTINFO says which local
    // address a new peer wrote to, so its socket answers from that address.
    ::setsockopt(*fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (local.ss_family == AF_INET6) {
      ::setsockopt(*fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    } else {
      ::setsockopt(*fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    }
    if (::bind(*fd, reinterpret_cast<const sockaddr*>(&local), addr_len(local)) != 0) {
      last = io_error("cannot listen on udp:" + address);
      ::close(*fd);
      continue;
    }
    std::unique_ptr<PortListener> l(new PortListener());
    l->fd_ = *fd;
    l->options_ = options;
    l->check_ = std::move(check);
    l->where_ = to_string(local);
    l->port_ = ntohs(local.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(local).sin6_port
                                                 : reinterpret_cast<sockaddr_in&>(local).sin_port);
    l->buf_.resize(kMaxUdpPayload);
    return l;
  }
  return last;
}

PortListener::~PortListener() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

// Identity of a peer: family, address and port, as bytes.
std::string peer_key(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET6) {
    const auto& s = reinterpret_cast<const sockaddr_in6&>(a);
    return std::string(reinterpret_cast<const char*>(&s.sin6_addr), 16) +
           std::string(reinterpret_cast<const char*>(&s.sin6_port), 2) + "6";
  }
  const auto& s = reinterpret_cast<const sockaddr_in&>(a);
  return std::string(reinterpret_cast<const char*>(&s.sin_addr), 4) +
         std::string(reinterpret_cast<const char*>(&s.sin_port), 2) + "4";
}

// The local address a datagram was sent to, from its IP(V6)_PKTINFO; port is the listener's.
sockaddr_storage local_address(msghdr& msg, int family, uint16_t port) {
  sockaddr_storage out{};
  out.ss_family = static_cast<sa_family_t>(family);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (family == AF_INET6 && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
      auto& s = reinterpret_cast<sockaddr_in6&>(out);
      s.sin6_addr = pi.ipi6_addr;
      // A link-local address means nothing without its interface.
      if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr)) s.sin6_scope_id = pi.ipi6_ifindex;
    } else if (family == AF_INET && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      in_pktinfo pi;
      std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
      reinterpret_cast<sockaddr_in&>(out).sin_addr = pi.ipi_addr;
    }
  }
  if (family == AF_INET6) {
    reinterpret_cast<sockaddr_in6&>(out).sin6_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in&>(out).sin_port = htons(port);
  }
  return out;
}

}  // namespace

bool PortListener::is_new(size_t len, const std::string& key, uint64_t& id) {
  const uint64_t now = now_ns();
  std::erase_if(peers_, [now](const std::shared_ptr<PeerSlot>& p) {
    uint64_t closed = p->closed_ns.load(std::memory_order_acquire);
    return closed != 0 && now - closed > kForgetClosedNs;
  });
  // A linear scan: a listener has as many peers as a migration has channels.
  auto known = std::find_if(peers_.begin(), peers_.end(),
                            [&](const std::shared_ptr<PeerSlot>& p) { return p->key == key; });
  // While the peer's own socket exists, a second one for the same 4-tuple would split its
  // datagrams between the two; its old connection has to die (liveness timeout) first.
  if (known != peers_.end() && (*known)->closed_ns.load(std::memory_order_acquire) == 0) {
    ++duplicates_;
    return false;
  }
  id = 0;
  if (check_) {
    auto checked = check_(std::span<const uint8_t>(buf_.data(), len));
    if (!checked) {
      ++refused_;
      return false;
    }
    id = *checked;
  }
  if (known != peers_.end()) {
    if ((*known)->id == id) {
      ++duplicates_;  // a stale repeat of a connection that already ended
      return false;
    }
    peers_.erase(known);  // the peer opens a new connection from the same address
  }
  return true;
}

Result<AcceptedPort> PortListener::accept(int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
  for (;;) {
    sockaddr_storage peer{};
    iovec iov{buf_.data(), buf_.size()};
    alignas(cmsghdr) char control[256];
    msghdr msg{};
    msg.msg_name = &peer;
    msg.msg_namelen = sizeof peer;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t r = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (r >= 0) {
      std::string key = peer_key(peer);
      uint64_t id = 0;
      if (!is_new(static_cast<size_t>(r), key, id)) continue;
      return take(static_cast<size_t>(r), peer, local_address(msg, peer.ss_family, port_),
                  std::move(key), id);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return io_error("udp listener on " + where_ + ": recvmsg");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return error(ErrorCode::kTimeout, "no new peer on udp:" + where_ + " within " +
                                            std::to_string(timeout_ms) + " ms");
    }
    pollfd p{fd_, POLLIN, 0};
    // Round up so that a sub-millisecond remainder still waits instead of spinning.
    ::poll(&p, 1, static_cast<int>(left.count()) + 1);
  }
}

// Gives a new peer its own socket: bound to the address it wrote to, connected to it.
Result<AcceptedPort> PortListener::take(size_t len, const sockaddr_storage& peer,
                                        const sockaddr_storage& local, std::string key,
                                        uint64_t id) {
  const std::string who = "udp peer " + to_string(peer) + " on " + where_;
  auto fd = open_socket(local.ss_family, options_);
  if (!fd) return fd.status();
  int one = 1;
  ::setsockopt(*fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  Status st = attach_peer_filter(*fd, peer);
  if (st && ::bind(*fd, reinterpret_cast<const sockaddr*>(&local), addr_len(local)) != 0) {
    st = io_error(who + ": cannot bind its socket to " + to_string(local));
  }
  if (st && ::connect(*fd, reinterpret_cast<const sockaddr*>(&peer), addr_len(peer)) != 0) {
    st = io_error(who + ": cannot connect its socket");
  }
  if (!st) {
    ::close(*fd);
    return st;
  }
  auto slot = std::make_shared<PeerSlot>();
  slot->key = std::move(key);
  slot->id = id;
  auto port = make_port(*fd, peer, options_, slot);
  if (!port) return port.status();
  peers_.push_back(std::move(slot));
  return AcceptedPort{std::move(*port), std::vector<uint8_t>(buf_.begin(), buf_.begin() + len)};
}

}  // namespace ferry::dataplane::udp
