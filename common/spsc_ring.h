// common/spsc_ring.h — bounded single-producer/single-consumer ring.
//
// Threads meet only through these rings (STYLE.md). One thread may call the producer side
// (try_push*), one other thread the consumer side (try_pop*). Capacity is a power of two
// fixed at construction; nothing allocates afterwards. Producer and consumer indices sit on
// separate cache lines so the two threads do not false-share.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

namespace ferry {

template <typename T>
class SpscRing {
 public:
  // capacity is rounded up to a power of two (at least 2).
  explicit SpscRing(size_t capacity) {
    size_t c = 2;
    while (c < capacity) c <<= 1;
    mask_ = c - 1;
    slots_ = std::make_unique<T[]>(c);
  }

  size_t capacity() const { return mask_ + 1; }

  // Producer: returns false when full.
  bool try_push(T value) {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    if (head - cached_tail_ > mask_) {
      cached_tail_ = tail_.load(std::memory_order_acquire);
      if (head - cached_tail_ > mask_) return false;
    }
    slots_[head & mask_] = std::move(value);
    head_.store(head + 1, std::memory_order_release);
    return true;
  }

  // Consumer: returns false when empty.
  bool try_pop(T& out) {
    const uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == cached_head_) {
      cached_head_ = head_.load(std::memory_order_acquire);
      if (tail == cached_head_) return false;
    }
    out = std::move(slots_[tail & mask_]);
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer: pops up to out.size() items; returns the count.
  size_t pop_burst(std::span<T> out) {
    size_t n = 0;
    while (n < out.size() && try_pop(out[n])) ++n;
    return n;
  }

  // Approximate; either side may call it.
  size_t size() const {
    return static_cast<size_t>(head_.load(std::memory_order_acquire) -
                               tail_.load(std::memory_order_acquire));
  }
  bool empty() const { return size() == 0; }

 private:
  static constexpr size_t kCacheLine = 64;
  alignas(kCacheLine) std::atomic<uint64_t> head_{0};  // written by the producer
  uint64_t cached_tail_ = 0;                           // producer's view of tail_
  alignas(kCacheLine) std::atomic<uint64_t> tail_{0};  // written by the consumer
  uint64_t cached_head_ = 0;                           // consumer's view of head_
  alignas(kCacheLine) size_t mask_ = 0;
  std::unique_ptr<T[]> slots_;
};

}  // namespace ferry
