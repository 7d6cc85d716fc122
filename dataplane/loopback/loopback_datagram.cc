// dataplane/loopback/loopback_datagram.cc — see loopback_datagram.h.
#include "dataplane/loopback/loopback_datagram.h"

#include <cstring>
#include <string>
#include <vector>

#include "common/spsc_ring.h"

namespace ferry::dataplane::loopback {
namespace internal {

// One direction: a slab of slots; `ready` carries filled slot numbers to the receiver and
// `free` carries them back, so each ring has one producer and one consumer.
struct Lane {
  Lane(size_t slots, size_t slot_bytes)
      : slab(slots * slot_bytes), lens(slots), ready(slots), free(slots), slot_bytes(slot_bytes) {
    for (uint32_t i = 0; i < slots; ++i) free.try_push(i);
  }
  std::vector<uint8_t> slab;
  std::vector<uint32_t> lens;
  SpscRing<uint32_t> ready;
  SpscRing<uint32_t> free;
  size_t slot_bytes;
};

}  // namespace internal

Result<LoopbackDatagramPair> make_loopback_datagram_pair(const LoopbackDatagramOptions& options) {
  if (options.max_datagram < 64 || options.max_datagram > 65535 || options.slots < 2 ||
      options.slots > (1u << 20)) {
    return error(ErrorCode::kInvalidArgument,
                 "loopback datagrams: " + std::to_string(options.slots) + " slots of " +
                     std::to_string(options.max_datagram) + " bytes is not a valid size");
  }
  auto ab = std::make_shared<internal::Lane>(options.slots, options.max_datagram);
  auto ba = std::make_shared<internal::Lane>(options.slots, options.max_datagram);
  LoopbackDatagramPair pair;
  pair.a = std::make_unique<LoopbackDatagramPort>(ab, ba, options.max_datagram, options.lend_rx);
  pair.b = std::make_unique<LoopbackDatagramPort>(ba, ab, options.max_datagram, options.lend_rx);
  return pair;
}

LoopbackDatagramPort::LoopbackDatagramPort(std::shared_ptr<internal::Lane> tx,
                                           std::shared_ptr<internal::Lane> rx, size_t max_datagram,
                                           bool lend_rx)
    : tx_(std::move(tx)), rx_(std::move(rx)), max_datagram_(max_datagram), lend_rx_(lend_rx) {
  lent_.reserve(256);  // more than any burst asks for: receiving never allocates
}

LoopbackDatagramPort::~LoopbackDatagramPort() { release_views(); }

size_t LoopbackDatagramPort::send_burst(std::span<const DatagramOut> out) noexcept {
  for (const DatagramOut& d : out) {
    uint32_t slot;
    if (d.size() > max_datagram_ || !tx_->free.try_pop(slot)) {
      ++full_drops_;
      continue;
    }
    uint8_t* p = tx_->slab.data() + size_t{slot} * tx_->slot_bytes;
    if (!d.head.empty()) std::memcpy(p, d.head.data(), d.head.size());
    if (!d.body.empty()) std::memcpy(p + d.head.size(), d.body.data(), d.body.size());
    tx_->lens[slot] = static_cast<uint32_t>(d.size());
    tx_->ready.try_push(slot);  // cannot fail: it holds at most every slot
  }
  return out.size();
}

size_t LoopbackDatagramPort::recv_burst(std::span<DatagramIn> in) noexcept {
  size_t n = 0;
  uint32_t slot;
  while (n < in.size() && rx_->ready.try_pop(slot)) {
    const size_t len = rx_->lens[slot];
    if (len <= in[n].cap) {
      std::memcpy(in[n].buf, rx_->slab.data() + size_t{slot} * rx_->slot_bytes, len);
      in[n].len = len;
      ++n;
    }
    rx_->free.try_push(slot);
  }
  return n;
}

size_t LoopbackDatagramPort::recv_views(std::span<DatagramView> out) noexcept {
  release_views();
  uint32_t slot;
  while (lent_.size() < out.size() && rx_->ready.try_pop(slot)) {
    out[lent_.size()] = {rx_->slab.data() + size_t{slot} * rx_->slot_bytes, rx_->lens[slot]};
    lent_.push_back(slot);
  }
  views_lent_ += lent_.size();
  return lent_.size();
}

void LoopbackDatagramPort::release_views() noexcept {
  for (uint32_t slot : lent_) rx_->free.try_push(slot);
  lent_.clear();
}

}  // namespace ferry::dataplane::loopback
