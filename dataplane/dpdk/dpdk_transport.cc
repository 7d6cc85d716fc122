// dataplane/dpdk/dpdk_transport.cc — the `dpdk` transport's control path: address parsing,
// the listener over the device's listening demux, connect with ARP and the reliable
// handshake, and the link that adds the device's counters to reliable/'s stats.
#include "dataplane/dpdk/dpdk_transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "dataplane/dpdk/dpdk_settings.h"
#include "dataplane/dpdk/dpdk_wire.h"
#include "dataplane/dpdk/internal/dpdk_device.h"
#include "dataplane/dpdk/internal/dpdk_port.h"
#include "dataplane/reliable/reliable_transport.h"

namespace ferry::dataplane::dpdk {
namespace {

using reliable::ReliableTransport;
using reliable::Role;

struct Address {
  uint32_t ip = 0;
  uint16_t port = 0;
};

Result<Address> parse_address(const std::string& text) {
  auto colon = text.rfind(':');
  const std::string usage = "dpdk address '" + text + "' is not IPV4:PORT";
  if (colon == std::string::npos) return error(ErrorCode::kInvalidArgument, usage);
  auto ip = parse_ipv4(text.substr(0, colon));
  char* end = nullptr;
  const std::string port_s = text.substr(colon + 1);
  const unsigned long port = std::strtoul(port_s.c_str(), &end, 10);
  if (!ip || port_s.empty() || *end != 0 || port == 0 || port > 65535) {
    return error(ErrorCode::kInvalidArgument, usage);
  }
  return Address{*ip, static_cast<uint16_t>(port)};
}

// reliable/'s defaults, but a retransmit timeout of at least 20 ms: a dpdk link's datagrams
// pass a thread hop (the demux) and its RTT on a veth or memif is tens of microseconds, so the
// 5 ms floor fired on every scheduling stall of a loaded host (spurious resends, each a lossy
// round for the rate estimate). Real losses are found by RACK well before the timeout. The
// packet window fits the flow's ring: a receiver slower than the link (over memif the sink,
// not the path, sets the pace) then holds the sender back instead of overflowing the ring,
// every datagram of which would be sent again.
reliable::ReliableOptions link_options(const TransportSettings& settings, const Device& device) {
  reliable::ReliableOptions o;
  o.min_rto = std::chrono::milliseconds(20);
  o.pkt_window = device.flow_window();
  o.liveness_timeout = settings.link_timeout;
  return o;
}

bool is_syn(std::span<const uint8_t> datagram) {
  return static_cast<bool>(reliable::parse_syn(datagram));
}

// reliable/ over a flow, plus the device's counters in link_stats (the drops of strangers'
// datagrams happen below any one link).
class DpdkLink final : public Transport {
 public:
  DpdkLink(std::unique_ptr<ReliableTransport> inner, Device& device)
      : inner_(std::move(inner)), device_(device) {}

  const char* kind() const noexcept override { return "dpdk"; }
  TransportCaps caps() const noexcept override {
    TransportCaps c = inner_->caps();
    return c;
  }
  FramePool& pool() noexcept override { return inner_->pool(); }
  size_t tx_burst(std::span<FrameBuf* const> f) noexcept override { return inner_->tx_burst(f); }
  size_t reap_tx(std::span<FrameBuf*> out) noexcept override { return inner_->reap_tx(out); }
  size_t rx_burst(std::span<FrameBuf*> out) noexcept override { return inner_->rx_burst(out); }
  size_t progress(TimePoint now) noexcept override { return inner_->progress(now); }
  TimePoint next_deadline() const noexcept override { return inner_->next_deadline(); }
  void close_tx() noexcept override { inner_->close_tx(); }
  LinkState state() const noexcept override { return inner_->state(); }
  const Status& error() const noexcept override { return inner_->error(); }
  size_t tx_in_flight_bytes() const noexcept override { return inner_->tx_in_flight_bytes(); }
  size_t tx_unsent_bytes() const noexcept override { return inner_->tx_unsent_bytes(); }
  int wait_fd() const noexcept override { return inner_->wait_fd(); }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override {
    return inner_->wait_events(want_rx, want_tx);
  }
  void set_buffer_hint(size_t bytes) noexcept override { inner_->set_buffer_hint(bytes); }
  void set_unsent_limit(size_t bytes) noexcept override { inner_->set_unsent_limit(bytes); }
  double min_rtt_s() const noexcept override { return inner_->min_rtt_s(); }
  void set_pacing_rate(double bytes_per_s) noexcept override {
    inner_->set_pacing_rate(bytes_per_s);
  }
  json::Value link_stats() const override {
    json::Value v = inner_->link_stats();
    v.set("stray", inner_->stats().stray);  // datagrams of another session on this flow
    v.set("dpdk", device_.stats_json());
    return v;
  }
  uint64_t retransmits() const noexcept override { return inner_->retransmits(); }

 private:
  std::unique_ptr<ReliableTransport> inner_;
  Device& device_;
};

Result<std::unique_ptr<Transport>> make_link(Device& device, std::shared_ptr<Flow> flow, Role role,
                                             std::span<const uint8_t> first,
                                             const TransportSettings& settings) {
  auto port = std::make_unique<DpdkPort>(device, std::move(flow));
  auto link =
      ReliableTransport::create(std::move(port), link_options(settings, device), role, first);
  if (!link) return link.status();
  return std::unique_ptr<Transport>(new DpdkLink(std::move(*link), device));
}

class DpdkListener final : public Listener {
 public:
  DpdkListener(Device& device, Address where, int event_fd, const TransportSettings& settings)
      : device_(device), where_(where), event_fd_(event_fd), settings_(settings) {}
  ~DpdkListener() override {
    device_.unlisten(where_.port);
    ::close(event_fd_);
  }

  Result<std::unique_ptr<Transport>> accept(int timeout_ms) override {
    const TimePoint deadline = Clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
    for (;;) {
      uint64_t v;
      ssize_t r = ::read(event_fd_, &v, sizeof v);  // clear before looking
      (void)r;
      device_.poll_rx(nullptr);
      PendingSyn syn;
      while (device_.take_pending(where_.port, syn)) {
        auto flow =
            device_.open_flow(syn.key.peer_ip, syn.key.peer_port, syn.peer_mac, where_.port);
        if (!flow) continue;  // a repeated SYN of a flow accepted already
        return make_link(device_, std::move(*flow), Role::kServer, syn.datagram, settings_);
      }
      const int left = ms_left(deadline);
      if (left == 0) return error(ErrorCode::kTimeout, "no new dpdk link");
      // The watcher thread drains the port and signals the eventfd; bounded anyway.
      pollfd p{event_fd_, POLLIN, 0};
      ::poll(&p, 1, std::min(left, 10));
    }
  }
  int wait_fd() const noexcept override { return event_fd_; }
  std::string where() const override {
    return "dpdk:" + format_ipv4(where_.ip) + ":" + std::to_string(where_.port);
  }

 private:
  Device& device_;
  Address where_;
  int event_fd_;
  TransportSettings settings_;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& transport) {
  auto a = parse_address(address);
  if (!a) return a.status();
  DpdkSettings s = settings();
  if (s.local_ip.empty()) {
    s.local_ip = format_ipv4(a->ip);
    configure(s);
  } else if (parse_ipv4(s.local_ip) != a->ip) {
    return error(ErrorCode::kInvalidArgument,
                 "dpdk: listening on " + format_ipv4(a->ip) + " but --dpdk-local is " + s.local_ip);
  }
  auto device = Device::get();
  if (!device) return device.status();
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return error(ErrorCode::kIo, "dpdk: eventfd failed");
  if (auto st = (*device)->listen(a->port, &is_syn, efd); !st) {
    ::close(efd);
    return st;
  }
  return std::unique_ptr<Listener>(new DpdkListener(**device, *a, efd, transport));
}

Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
  auto a = parse_address(address);
  if (!a) return a.status();
  auto device = Device::get();
  if (!device) return device.status();
  auto mac = (*device)->resolve(a->ip, ms_left(deadline));
  if (!mac) {
    return error(ErrorCode::kClosed,
                 "cannot connect to dpdk:" + address + ": " + mac.status().message());
  }
  auto flow = (*device)->open_flow(a->ip, a->port, *mac);
  if (!flow) return flow.status();
  auto port = std::make_unique<DpdkPort>(**device, std::move(*flow));
  auto link =
      ReliableTransport::create(std::move(port), link_options(settings, **device), Role::kClient);
  if (!link) return link.status();
  Status st = reliable::wait_established(**link, ms_left(deadline));
  if (!st) {
    return error(st.code(), "cannot connect to dpdk:" + address + ": " + st.message());
  }
  return std::unique_ptr<Transport>(new DpdkLink(std::move(*link), **device));
}

}  // namespace ferry::dataplane::dpdk
