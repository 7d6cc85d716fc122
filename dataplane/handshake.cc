// dataplane/handshake.cc — see handshake.h.
#include "dataplane/handshake.h"

#include <vector>

namespace ferry::dataplane {
namespace {

// The frame's own checks (type, length, CRC, seq 0), for HELLO and ACCEPT.
Result<FrameChecker::Frame> check_first(FrameBuf* f, FrameType want) {
  FrameChecker check(0);
  FrameChecker::Frame frame;
  size_t pos = 0;
  auto got = check.next(f->data, f->len, &pos, frame);
  if (!got) return got.status();
  if (!*got || frame.header.type != want) {
    return error(ErrorCode::kProtocol, want == FrameType::kHello
                                           ? "the peer did not start with HELLO (not ferry send?)"
                                           : "the peer did not answer with ACCEPT");
  }
  return frame;
}

}  // namespace

Status sender_handshake(Transport& link, const Handshake& hello, int timeout_ms) {
  uint8_t h[kHandshakeSize];
  encode_handshake(hello, h);
  if (auto st = send_frame(link, FrameType::kHello, 0, h, timeout_ms); !st) return st;
  auto f = recv_frame(link, timeout_ms);
  if (!f) return Status(f.status().code(), "handshake: " + f.status().message());
  auto frame = check_first(*f, FrameType::kAccept);
  Status result = Status::ok();
  if (!frame) {
    result = Status(frame.status().code(), "handshake: " + frame.status().message());
  } else if (frame->header.len < 1 || frame->payload[0] != kAccept) {
    std::string why(reinterpret_cast<const char*>(frame->payload) + (frame->header.len ? 1 : 0),
                    frame->header.len ? frame->header.len - 1 : 0);
    result = Status(ErrorCode::kProtocol,
                    "rejected: " + (why.empty() ? std::string("no reason given") : why));
  }
  (*f)->pool->free(*f);
  return result;
}

Result<Handshake> receiver_read_hello(Transport& link, int timeout_ms) {
  auto f = recv_frame(link, timeout_ms);
  if (!f) return Status(f.status().code(), "handshake: " + f.status().message());
  auto frame = check_first(*f, FrameType::kHello);
  Result<Handshake> out =
      frame ? (frame->header.len == kHandshakeSize
                   ? decode_handshake(frame->payload)
                   : Result<Handshake>(
                         error(ErrorCode::kProtocol,
                               "handshake: HELLO of " + std::to_string(frame->header.len) +
                                   " bytes, expected " + std::to_string(kHandshakeSize))))
            : Result<Handshake>(
                  Status(frame.status().code(), "handshake: " + frame.status().message()));
  (*f)->pool->free(*f);
  return out;
}

Status receiver_answer(Transport& link, bool accept, const std::string& reason, int timeout_ms) {
  std::vector<uint8_t> payload;
  payload.push_back(accept ? kAccept : kReject);
  if (!accept) payload.insert(payload.end(), reason.begin(), reason.end());
  if (auto st = send_frame(link, FrameType::kAccept, 0, payload, timeout_ms); !st) return st;
  return accept ? Status::ok() : drain_tx(link, timeout_ms);
}

}  // namespace ferry::dataplane
