// dataplane/handshake.cc — see handshake.h.
#include "dataplane/handshake.h"

#include <algorithm>
#include <vector>

#include "dataplane/security/protected_transport.h"

namespace ferry::dataplane {
namespace {

Status in_handshake(const Status& st) { return Status(st.code(), "handshake: " + st.message()); }

}  // namespace

std::string rejection_reason(const FrameChecker::Frame& accept) {
  std::string why(reinterpret_cast<const char*>(accept.payload) + (accept.header.len ? 1 : 0),
                  accept.header.len ? accept.header.len - 1 : 0);
  return why.empty() ? std::string("no reason given") : why;
}

HandshakeReader::~HandshakeReader() {
  if (buf_) buf_->pool->free(buf_);
}

Result<FrameChecker::Frame> HandshakeReader::next(TimePoint deadline) {
  for (;;) {
    if (buf_ && pos_ < buf_->len) {
      FrameChecker check(0);  // every handshake frame is seq 0
      FrameChecker::Frame frame;
      auto got = check.next(buf_->data, buf_->len, &pos_, frame);
      if (!got) return got.status();
      if (*got) return frame;
    }
    if (buf_) buf_->pool->free(buf_);
    buf_ = nullptr;
    pos_ = 0;
    auto f = recv_frame(link_, std::min(ms_left(deadline), cancel_ ? 100 : 1 << 30));
    if (!f) {
      const bool more_time = Clock::now() < deadline;
      if (cancel_ && cancel_->load(std::memory_order_relaxed)) {
        return error(ErrorCode::kClosed, "ferry recv is stopping");
      }
      if (f.status().code() == ErrorCode::kTimeout && more_time) continue;
      return f.status();
    }
    buf_ = *f;
  }
}

Result<std::unique_ptr<Transport>> sender_handshake(std::unique_ptr<Transport> link,
                                                    SenderHello s) {
  const TimePoint deadline = Clock::now() + std::chrono::milliseconds(s.timeout_ms);
  if (s.security) s.hello.features |= kFeatureTls;
  const std::vector<uint8_t> h = encode_handshake(s.hello);
  if (auto st = send_frame(*link, FrameType::kHello, 0, h, s.timeout_ms); !st) {
    return in_handshake(st);
  }
  HandshakeReader reader(*link);
  std::optional<SessionKeys> keys;
  if (s.security) {
    auto k = s.security->handshake(*link, reader, h, s.peer_host, deadline);
    if (!k) return k.status();
    keys = std::move(*k);
  }
  // The receiver answers once the destination QEMU is connected in channel order: a step of
  // its own, with a full timeout.
  auto frame = reader.next(Clock::now() + std::chrono::milliseconds(s.timeout_ms));
  if (!frame) return in_handshake(frame.status());
  if (frame->header.type != FrameType::kAccept) {
    return error(ErrorCode::kProtocol, "handshake: the peer did not answer with ACCEPT");
  }
  if (frame->header.len < 1 || frame->payload[0] != kAccept) {
    return Status(ErrorCode::kRefused, "rejected: " + rejection_reason(*frame));
  }
  if (!keys) return link;
  return protect_link(std::move(link), *keys);
}

Result<Greeting> receiver_greet(Transport& link, const LinkSecurity* security, TimePoint deadline,
                                const std::atomic<bool>* cancel) {
  HandshakeReader reader(link, cancel);
  auto frame = reader.next(deadline);
  if (!frame) return in_handshake(frame.status());
  if (frame->header.type != FrameType::kHello) {
    return error(ErrorCode::kProtocol,
                 "handshake: the peer did not start with HELLO (not ferry send?)");
  }
  auto hello = decode_handshake({frame->payload, frame->header.len});
  if (!hello) return in_handshake(hello.status());
  Greeting g;
  g.hello = *hello;
  const bool tls = hello->features & kFeatureTls;
  if (security && !tls) {
    return error(ErrorCode::kAuth,
                 std::string("this ferry recv accepts authenticated senders only: give ferry send "
                             "its credentials too (") +
                     security->flag() + ")");
  }
  if (!security && tls) {
    return error(ErrorCode::kAuth,
                 "ferry send asked for TLS but this ferry recv has no credentials (give it "
                 "--tls-x509-dir or --tls-psk-file)");
  }
  if (tls) {
    // The whole HELLO (the VM name included) goes into the TLS transcript: authenticated.
    const std::vector<uint8_t> bytes(frame->payload, frame->payload + frame->header.len);
    auto k = security->handshake(link, reader, bytes, "", deadline);
    if (!k) return k.status();
    g.keys = std::move(*k);
  }
  return g;
}

Result<std::unique_ptr<Transport>> receiver_accept(std::unique_ptr<Transport> link,
                                                   const Greeting& greeting, int timeout_ms) {
  const uint8_t yes = kAccept;
  if (auto st = send_frame(*link, FrameType::kAccept, 0, {&yes, 1}, timeout_ms); !st) {
    return in_handshake(st);
  }
  if (!greeting.keys) return link;
  return protect_link(std::move(link), *greeting.keys);
}

Status receiver_refuse(Transport& link, const std::string& reason, int timeout_ms) {
  std::vector<uint8_t> payload;
  payload.push_back(kReject);
  payload.insert(payload.end(), reason.begin(), reason.end());
  if (auto st = send_frame(link, FrameType::kAccept, 0, payload, timeout_ms); !st) return st;
  return drain_tx(link, timeout_ms);
}

}  // namespace ferry::dataplane
