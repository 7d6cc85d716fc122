// Fuzzing of the link handshake's receive paths (dataplane/handshake.h, protocol.h) with
// hostile bytes, over the in-process loopback transport (one thread: every step runs with a
// zero deadline on frames already queued).
// Input: hello_len:u16le hello[hello_len] accept[rest].
//  * decode_handshake on the input's first kMaxHandshakeSize bytes (or all of a shorter one):
//    an accepted HELLO payload (VM name included) re-encodes to the same bytes;
//  * FrameChecker from seq 0 over the whole input: every frame it returns lies inside it;
//  * `hello` is sent as a raw frame buffer to a receiver's receiver_greet (no credentials);
//  * `accept` is queued as the receiver's raw answer before a sender's sender_handshake.
// Must never crash, hang, or read outside the frame.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "dataplane/handshake.h"
#include "dataplane/loopback/loopback_transport.h"
#include "dataplane/protocol.h"

using namespace ferry::dataplane;

namespace {

struct Link {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Transport> sender;    // the client end (ferry send)
  std::unique_ptr<Transport> receiver;  // the accepted end (ferry recv)
};

// A fresh client/accepted pair on the one listener (a failed sender handshake closes its end).
void connect_pair(Link& k) {
  k.sender.reset();
  k.receiver.reset();
  auto c = loopback::connect("handshake-fuzz", 0);
  if (!c) __builtin_trap();
  k.sender = std::move(*c);
  auto a = k.listener->accept(0);
  if (!a) __builtin_trap();
  k.receiver = std::move(*a);
}

Link& link() {
  static Link* l = [] {
    auto* k = new Link;
    auto li = loopback::listen("handshake-fuzz");
    if (!li) __builtin_trap();
    k->listener = std::move(*li);
    connect_pair(*k);
    return k;
  }();
  return *l;
}

// Queues bytes as one frame buffer, whatever they hold (a peer writes what it likes).
void send_raw(Transport& t, const uint8_t* p, size_t n) {
  FrameBuf* f = t.pool().alloc();
  if (!f) __builtin_trap();
  if (n > f->cap) n = f->cap;
  if (n) std::memcpy(f->data, p, n);
  f->len = static_cast<uint32_t>(n);
  if (t.tx_burst({&f, 1}) != 1) __builtin_trap();
}

// Takes every frame still queued towards t and every buffer t's peer has copied, so the next
// input starts from empty rings and full pools.
void drain(Transport& t) {
  FrameBuf* bufs[8];
  for (size_t n; (n = t.rx_burst(bufs)) > 0;) {
    for (size_t i = 0; i < n; ++i) bufs[i]->pool->free(bufs[i]);
  }
}
void reap(Transport& t) {
  FrameBuf* bufs[8];
  for (size_t n; (n = t.reap_tx(bufs)) > 0;) {
    for (size_t i = 0; i < n; ++i) bufs[i]->pool->free(bufs[i]);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    // Every length: a HELLO payload may carry a VM name after the fixed part.
    const size_t n = std::min(size, kMaxHandshakeSize);
    auto h = decode_handshake({data, n});
    if (h) {
      const auto again = encode_handshake(*h);
      if (again.size() != n || std::memcmp(again.data(), data, n) != 0) {
        __builtin_trap();
      }
    } else if (h.status().message().empty()) {
      __builtin_trap();
    }
  }
  {
    FrameChecker check(0);
    FrameChecker::Frame frame;
    size_t pos = 0;
    for (;;) {
      auto got = check.next(data, size, &pos, frame);
      if (!got || !*got) break;
      if (frame.payload < data || frame.payload + frame.header.len > data + size) {
        __builtin_trap();
      }
      if (pos > size) __builtin_trap();
    }
  }
  if (size < 2) return 0;
  size_t hello_len = data[0] | (size_t{data[1]} << 8);
  const uint8_t* p = data + 2;
  size_t left = size - 2;
  if (hello_len > left) hello_len = left;
  Link& l = link();

  send_raw(*l.sender, p, hello_len);
  auto hello = receiver_greet(*l.receiver, nullptr, ferry::Clock::now());
  if (hello && hello->hello.version != kVersion) __builtin_trap();

  send_raw(*l.receiver, p + hello_len, left - hello_len);
  SenderHello h;
  h.hello.features = kFeaturePages;
  h.hello.session_id = 42;
  h.timeout_ms = 0;
  auto sent = sender_handshake(std::move(l.sender), std::move(h));
  if (!sent) {
    connect_pair(l);
    return 0;
  }
  l.sender = std::move(*sent);

  drain(*l.receiver);  // the sender's HELLO
  drain(*l.sender);
  reap(*l.sender);
  reap(*l.receiver);
  if (l.sender->pool().available() != loopback::kPoolFrames ||
      l.receiver->pool().available() != loopback::kPoolFrames) {
    __builtin_trap();  // a path kept a buffer: a leak a stranger could repeat
  }
  return 0;
}
