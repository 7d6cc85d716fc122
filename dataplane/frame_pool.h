// dataplane/frame_pool.h — the fixed pool of frame buffers every transport moves: made once at
// setup as one memory region (so an RDMA backend can register it with one call and a DPDK
// backend can attach it to mbufs), never grown, owned by one thread.
//
// A FrameBuf holds one whole ferry frame, header then payload (protocol.h). Producers take a
// buffer (alloc), write a frame into it and hand it to a transport (tx_burst); the transport
// hands it back when the bytes have left (reap_tx), and the producer frees it. Received
// frames arrive in buffers of the receiving transport's pool; whoever consumed one frees it.
// An empty pool is back-pressure: nothing more is read from QEMU or from the link until a
// buffer comes back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "dataplane/protocol.h"

namespace ferry::dataplane {

class FramePool;

struct FrameBuf {
  uint8_t* data = nullptr;  // kFrameHeaderSize + payload; cap bytes
  uint32_t len = 0;         // bytes of the frame written into data
  uint32_t cap = 0;
  FramePool* pool = nullptr;  // the pool it returns to
  uint32_t index = 0;         // slot in the pool (for registered-memory backends)

  uint8_t* payload() { return data + kFrameHeaderSize; }
  const uint8_t* payload() const { return data + kFrameHeaderSize; }
  uint32_t payload_len() const { return len - kFrameHeaderSize; }
  size_t payload_room() const { return cap - kFrameHeaderSize; }
};

struct FramePoolOptions {
  size_t frames = 64;
  // Bytes per buffer: the largest frame (header + kMaxPayload). Untouched pages of a buffer are
  // never made resident, so a large capacity costs address space, not memory.
  size_t frame_capacity = kFrameHeaderSize + kMaxPayload;
};

class FramePool {
 public:
  static Result<std::unique_ptr<FramePool>> create(const FramePoolOptions& options = {});
  // A view of backing's buffers with `head` bytes kept free before each and `tail` after (link
  // protection writes its header and tag there): the same memory and slot indexes, data and
  // cap shifted; alloc, free and available go through to backing. backing must outlive it.
  static std::unique_ptr<FramePool> view(FramePool& backing, size_t head, size_t tail);
  ~FramePool();
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  // A free buffer (len = 0), or nullptr when every buffer is in use. Owner thread only.
  FrameBuf* alloc() noexcept {
    if (backing_) {
      FrameBuf* b = backing_->alloc();
      if (!b) return nullptr;
      bufs_[b->index].len = 0;
      return &bufs_[b->index];
    }
    if (free_.empty()) return nullptr;
    FrameBuf* f = free_.back();
    free_.pop_back();
    f->len = 0;
    return f;
  }
  // Returns a buffer taken from this pool. Owner thread only.
  void free(FrameBuf* f) noexcept {
    if (backing_) {
      backing_->free(&backing_->bufs_[f->index]);
    } else {
      free_.push_back(f);
    }
  }

  size_t available() const noexcept { return backing_ ? backing_->available() : free_.size(); }
  size_t size() const noexcept { return bufs_.size(); }
  size_t frame_capacity() const noexcept { return capacity_; }
  // The one region every buffer lives in (registration with a NIC).
  std::span<uint8_t> memory() const noexcept { return {base_, bytes_}; }
  FrameBuf& at(uint32_t index) noexcept { return bufs_[index]; }

 private:
  FramePool() = default;

  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  size_t capacity_ = 0;
  std::vector<FrameBuf> bufs_;
  std::vector<FrameBuf*> free_;   // reserved to size() at create: push/pop never allocate
  FramePool* backing_ = nullptr;  // a view's pool (base_ stays null: the view maps nothing)
};

}  // namespace ferry::dataplane
