// dataplane/transport.cc — the transport registration table and the blocking handshake
// helpers shared by every backend.
#include "dataplane/transport.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "dataplane/loopback/loopback_transport.h"
#include "dataplane/tcp/tcp_transport.h"
#include "dataplane/udp/udp_transport.h"
#if FERRY_HAVE_RDMA
#include "dataplane/rdma/rdma_transport.h"
#endif
#if FERRY_HAVE_DPDK
#include "dataplane/dpdk/dpdk_transport.h"
#endif

namespace ferry::dataplane {
namespace {

// Adapters for backends that take no settings.
template <Result<std::unique_ptr<Listener>> (*L)(const std::string&)>
Result<std::unique_ptr<Listener>> plain_listen(const std::string& address,
                                               const TransportSettings&) {
  return L(address);
}
template <Result<std::unique_ptr<Transport>> (*C)(const std::string&, int)>
Result<std::unique_ptr<Transport>> plain_connect(const std::string& address, int timeout_ms,
                                                 const TransportSettings&) {
  return C(address, timeout_ms);
}

// One row per transport of DESIGN.md §5. dpdk and rdma, when their libraries were not found,
// are listed so `--version` and error messages say why they are missing rather than
// pretending they do not exist.
const TransportInfo kTransports[] = {
    {"tcp", "kernel TCP, non-blocking (default)", true, false, "", &tcp::listen, &tcp::connect},
    {"udp", "kernel UDP (sendmmsg/recvmmsg, GSO/GRO) under ferry's reliable layer", true, false, "",
     &udp::listen, &udp::connect},
    {"loopback", "in-process rings (tests)", true, true, "", &plain_listen<&loopback::listen>,
     &plain_connect<&loopback::connect>},
#if FERRY_HAVE_DPDK
    {"dpdk",
     "DPDK ethdev (NIC/VF, af_packet, af_xdp, memif), UDP/IPv4 under ferry's reliable layer", true,
     false, "", &dpdk::listen, &dpdk::connect},
#else
    {"dpdk", "DPDK ethdev (NIC/VF, af_packet, af_xdp, memif)", false, false,
     "ferry was built without DPDK: install dpdk-dev libdpdk-dev (scripts/setup.sh) and rebuild "
     "(meson setup --reconfigure build -Ddpdk=enabled)",
     nullptr, nullptr},
#endif
#if FERRY_HAVE_RDMA
    {"rdma", "RDMA via libfabric (verbs on RoCE/InfiniBand; --fabric-provider)", true, false, "",
     &rdma::listen, &rdma::connect},
#else
    {"rdma", "RDMA via libfabric", false, false,
     "built without RDMA (libfabric-dev was missing when Meson configured this build, or "
     "-Drdma=disabled: apt-get install libfabric-dev, then reconfigure)",
     nullptr, nullptr},
#endif
};

Result<const TransportInfo*> lookup(const std::string& spec, std::string& address) {
  auto colon = spec.find(':');
  std::string scheme = colon == std::string::npos ? spec : spec.substr(0, colon);
  std::string known;
  for (const auto& t : kTransports) {
    if (t.available) known += std::string(known.empty() ? "" : ", ") + t.name + ":...";
  }
  for (const auto& t : kTransports) {
    if (scheme != t.name) continue;
    if (!t.available) {
      return error(ErrorCode::kUnavailable,
                   std::string("transport ") + t.name + " is not in this build: " + t.why_not);
    }
    if (colon == std::string::npos || colon + 1 == spec.size()) {
      return error(ErrorCode::kInvalidArgument, "missing address in '" + spec + "'");
    }
    address = spec.substr(colon + 1);
    return &t;
  }
  return error(ErrorCode::kInvalidArgument,
               "unknown transport in '" + spec + "' (this build has " + known + ")");
}

}  // namespace

std::span<const TransportInfo> transports() { return kTransports; }

Result<std::unique_ptr<Listener>> listen_transport(const std::string& spec,
                                                   const TransportSettings& settings) {
  std::string address;
  auto t = lookup(spec, address);
  if (!t) return t.status();
  return (*t)->listen(address, settings);
}

Result<std::unique_ptr<Transport>> connect_transport(const std::string& spec, int timeout_ms,
                                                     const TransportSettings& settings) {
  std::string address;
  auto t = lookup(spec, address);
  if (!t) return t.status();
  return (*t)->connect(address, timeout_ms, settings);
}

Status check_transport_spec(const std::string& spec) {
  std::string address;
  auto t = lookup(spec, address);
  return t ? Status::ok() : t.status();
}

namespace {

// Sleeps until the link may have work or `until`, whichever comes first (handshake only).
void wait_link(Transport& link, bool want_rx, bool want_tx, TimePoint until) {
  const TimePoint now = Clock::now();
  TimePoint wake = std::min(until, link.next_deadline());
  if (wake <= now) return;
  wake = std::min(wake, now + std::chrono::milliseconds(20));  // timers of fd-less backends
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
  const uint32_t ev = link.wait_events(want_rx, want_tx);
  pollfd p{link.wait_fd(),
           static_cast<short>(((ev & kWaitReadable) ? POLLIN : 0) |
                              ((ev & kWaitWritable) ? POLLOUT : 0)),
           0};
  ::poll(&p, link.wait_fd() >= 0 && ev ? 1 : 0, static_cast<int>(std::max<int64_t>(ms, 1)));
}

// Returns every transmitted frame to its pool; the count.
size_t reap_all(Transport& link) {
  size_t total = 0;
  FrameBuf* done[8];
  for (size_t n; (n = link.reap_tx(done)) > 0; total += n) {
    for (size_t i = 0; i < n; ++i) done[i]->pool->free(done[i]);
  }
  return total;
}

Status link_error(Transport& link, const char* doing) {
  if (link.state() == LinkState::kFailed) return link.error();
  return Status(ErrorCode::kClosed, std::string("peer closed the link while ") + doing);
}

}  // namespace

Status send_frame(Transport& link, FrameType type, uint64_t seq, std::span<const uint8_t> payload,
                  int timeout_ms) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  FrameBuf* f = nullptr;
  while (!(f = link.pool().alloc())) {
    if (reap_all(link)) continue;
    if (Clock::now() >= deadline) return Status(ErrorCode::kTimeout, "no free frame buffer");
    link.progress(Clock::now());
    wait_link(link, false, true, deadline);
  }
  if (payload.size() > f->payload_room()) {
    link.pool().free(f);
    return Status(ErrorCode::kInvalidArgument, "control frame too large");
  }
  std::memcpy(f->payload(), payload.data(), payload.size());
  encode_frame_header(type, seq, f->payload(), static_cast<uint32_t>(payload.size()), f->data);
  f->len = static_cast<uint32_t>(kFrameHeaderSize + payload.size());
  for (;;) {
    if (link.tx_burst({&f, 1}) == 1) return Status::ok();
    if (link.state() != LinkState::kOpen) {
      link.pool().free(f);
      return link_error(link, "sending");
    }
    if (Clock::now() >= deadline) {
      link.pool().free(f);
      return Status(ErrorCode::kTimeout, "timed out sending to the peer");
    }
    link.progress(Clock::now());
    wait_link(link, false, true, deadline);
  }
}

Status drain_tx(Transport& link, int timeout_ms) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    link.progress(Clock::now());
    reap_all(link);
    if (link.tx_in_flight_bytes() == 0) return Status::ok();
    if (link.state() == LinkState::kFailed) return link.error();
    if (Clock::now() >= deadline) {
      return Status(ErrorCode::kTimeout, "timed out sending to the peer (" +
                                             std::to_string(link.tx_in_flight_bytes()) +
                                             " bytes not sent)");
    }
    wait_link(link, false, true, deadline);
  }
}

Result<FrameBuf*> recv_frame(Transport& link, int timeout_ms) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    link.progress(Clock::now());
    reap_all(link);
    FrameBuf* f = nullptr;
    if (link.rx_burst({&f, 1}) == 1) return f;
    if (link.state() != LinkState::kOpen) return link_error(link, "waiting for a frame");
    if (Clock::now() >= deadline) {
      return Status(ErrorCode::kTimeout, "timed out waiting for the peer");
    }
    wait_link(link, true, link.tx_in_flight_bytes() > 0, deadline);
  }
}

}  // namespace ferry::dataplane
