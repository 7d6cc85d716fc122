// dataplane/transport.cc — the transport registration table and the blocking handshake
// helpers shared by every backend.
#include "dataplane/transport.h"

#include <chrono>

#include "dataplane/loopback/loopback_transport.h"
#include "dataplane/tcp/tcp_transport.h"

namespace ferry::dataplane {
namespace {

// One row per transport of DESIGN.md §5. dpdk and rdma are listed so `--version` and error
// messages say why they are missing rather than pretending they do not exist.
const TransportInfo kTransports[] = {
    {"tcp", "kernel TCP, non-blocking (default)", true, false, "", &tcp::listen, &tcp::connect},
    {"loopback", "in-process rings (tests)", true, true, "", &loopback::listen, &loopback::connect},
    {"dpdk", "DPDK ethdev (af_packet, af_xdp, memif)", false, false, "not implemented yet", nullptr,
     nullptr},
    {"rdma", "RDMA via libfabric", false, false, "not implemented yet", nullptr, nullptr},
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
      return error(ErrorCode::kUnavailable, std::string("transport ") + t.name +
                                                " is not in this build: " + t.why_not);
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

int left_ms(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

std::span<const TransportInfo> transports() { return kTransports; }

Result<std::unique_ptr<Listener>> listen_transport(const std::string& spec) {
  std::string address;
  auto t = lookup(spec, address);
  if (!t) return t.status();
  return (*t)->listen(address);
}

Result<std::unique_ptr<Transport>> connect_transport(const std::string& spec, int timeout_ms) {
  std::string address;
  auto t = lookup(spec, address);
  if (!t) return t.status();
  return (*t)->connect(address, timeout_ms);
}

Status check_transport_spec(const std::string& spec) {
  std::string address;
  auto t = lookup(spec, address);
  return t ? Status::ok() : t.status();
}

Status Transport::send_all(std::span<const uint8_t> bytes, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!bytes.empty()) {
    size_t n = tx_burst(bytes);
    if (failed()) return error();
    bytes = bytes.subspan(n);
    if (bytes.empty()) break;
    if (n == 0) {
      pollfd p{poll_fd(), poll_events(false, true), 0};
      if (::poll(&p, 1, left_ms(deadline)) == 0) {
        return Status(ErrorCode::kTimeout, "timed out sending to the peer");
      }
      rearm();
    }
  }
  return Status::ok();
}

Status Transport::recv_exact(std::span<uint8_t> out, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t got = 0;
  while (got < out.size()) {
    size_t n = rx_burst(out.subspan(got));
    if (failed()) return error();
    got += n;
    if (got == out.size()) break;
    if (peer_closed()) {
      return Status(ErrorCode::kClosed, "peer closed after " + std::to_string(got) + " of " +
                                            std::to_string(out.size()) + " bytes");
    }
    if (n == 0) {
      pollfd p{poll_fd(), poll_events(true, false), 0};
      if (::poll(&p, 1, left_ms(deadline)) == 0) {
        return Status(ErrorCode::kTimeout, "timed out after " + std::to_string(got) + " of " +
                                               std::to_string(out.size()) + " bytes");
      }
      rearm();
    }
  }
  return Status::ok();
}

}  // namespace ferry::dataplane
