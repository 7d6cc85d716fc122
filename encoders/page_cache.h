// encoders/page_cache.h — a bounded LRU cache of page contents, kept identical on both ends.
//
// The sender's Encoder and the receiver's Decoder each own one PageCache of the same capacity.
// Both apply the same update for every record, in record order (see Encoder in page_codec.h):
//   zero form         -> remove(key)
//   any other form    -> the page's new content is stored under key, which becomes the most
//                        recently used entry; inserting into a full cache evicts the least
//                        recently used entry.
// The cache's state is thus a pure function of the sequence (key, is_zero, content), so "same"
// and delta records are always decoded against exactly the bytes the sender compared with.
//
// Not thread-safe: one owner thread (one cache per encode shard). All memory is allocated in
// create(); find/insert/remove/touch never allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"

namespace ferry::encoders {

class PageCache {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // capacity_pages may be 0 (a cache that holds nothing: every lookup misses).
  static Result<std::unique_ptr<PageCache>> create(size_t page_size, size_t capacity_pages);

  // Slot holding key, or kNone. Does not change recency.
  uint32_t find(uint64_t key) const;
  // Makes slot the most recently used.
  void touch(uint32_t slot);
  // Slot for key, most recently used, content unspecified until the caller writes it; evicts
  // the least recently used entry if the cache is full. kNone only when capacity is 0. key
  // must not be present.
  uint32_t insert(uint64_t key);
  // Drops key if present.
  void remove(uint64_t key);

  uint8_t* data(uint32_t slot) { return data_.get() + size_t{slot} * page_size_; }
  const uint8_t* data(uint32_t slot) const { return data_.get() + size_t{slot} * page_size_; }
  uint64_t key(uint32_t slot) const { return keys_[slot]; }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  size_t page_size() const { return page_size_; }
  uint64_t evictions() const { return evictions_; }
  // Keys from most to least recently used (tests compare both ends with this).
  std::vector<uint64_t> keys_by_recency() const;

 private:
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  PageCache() = default;
  size_t bucket_of(uint64_t key) const;
  void unlink(uint32_t slot);
  void push_front(uint32_t slot);
  void index_erase(size_t bucket);

  size_t page_size_ = 0;
  size_t capacity_ = 0;
  size_t size_ = 0;
  uint64_t evictions_ = 0;
  std::unique_ptr<uint8_t[], FreeDeleter> data_;
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> prev_, next_;  // LRU list through slots; head_ = most recent
  uint32_t head_ = kNone, tail_ = kNone;
  uint32_t free_next_ = 0;       // slots [free_next_, capacity_) never used yet
  uint32_t free_head_ = kNone;   // slots freed by remove(), chained through next_
  std::vector<uint32_t> index_;  // open addressing, linear probing: slot or kNone
  size_t index_mask_ = 0;
  int index_shift_ = 0;
};

}  // namespace ferry::encoders
