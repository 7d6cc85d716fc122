#include "encoders/page_cache.h"

#include <cstdlib>
#include <new>
#include <string>

namespace ferry::encoders {

void PageCache::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

Result<std::unique_ptr<PageCache>> PageCache::create(size_t page_size, size_t capacity_pages) {
  if (page_size == 0 || page_size % 64 != 0) {
    return error(ErrorCode::kInvalidArgument, "page cache: page size " + std::to_string(page_size) +
                                                  " is not a positive multiple of 64");
  }
  if (capacity_pages >= PageCache::kNone / 2) {
    return error(ErrorCode::kInvalidArgument, "page cache: capacity too large");
  }
  std::unique_ptr<PageCache> c(new PageCache());
  c->page_size_ = page_size;
  c->capacity_ = capacity_pages;
  if (capacity_pages > 0) {
    uint8_t* mem = static_cast<uint8_t*>(std::aligned_alloc(64, page_size * capacity_pages));
    if (mem == nullptr) {
      return error(ErrorCode::kUnavailable, "page cache: cannot allocate " +
                                                std::to_string(page_size * capacity_pages >> 20) +
                                                " MiB; lower --cache-mib");
    }
    c->data_.reset(mem);
    size_t buckets = 16;
    int bits = 4;
    while (buckets < 2 * capacity_pages) {
      buckets <<= 1;
      ++bits;
    }
    try {
      c->keys_.resize(capacity_pages);
      c->prev_.resize(capacity_pages);
      c->next_.resize(capacity_pages);
      c->index_.assign(buckets, kNone);
    } catch (const std::bad_alloc&) {
      return error(ErrorCode::kUnavailable, "page cache: out of memory; lower --cache-mib");
    }
    c->index_mask_ = buckets - 1;
    c->index_shift_ = 64 - bits;
  }
  return c;
}

size_t PageCache::bucket_of(uint64_t key) const {
  return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> index_shift_);
}

uint32_t PageCache::find(uint64_t key) const {
  if (capacity_ == 0) return kNone;
  for (size_t b = bucket_of(key);; b = (b + 1) & index_mask_) {
    const uint32_t s = index_[b];
    if (s == kNone) return kNone;
    if (keys_[s] == key) return s;
  }
}

void PageCache::unlink(uint32_t s) {
  if (prev_[s] != kNone)
    next_[prev_[s]] = next_[s];
  else
    head_ = next_[s];
  if (next_[s] != kNone)
    prev_[next_[s]] = prev_[s];
  else
    tail_ = prev_[s];
}

void PageCache::push_front(uint32_t s) {
  prev_[s] = kNone;
  next_[s] = head_;
  if (head_ != kNone) prev_[head_] = s;
  head_ = s;
  if (tail_ == kNone) tail_ = s;
}

void PageCache::touch(uint32_t s) {
  if (head_ == s) return;
  unlink(s);
  push_front(s);
}

// Backward-shift deletion keeps linear probing correct without tombstones, so the table never
// degrades however long the migration runs.
void PageCache::index_erase(size_t hole) {
  index_[hole] = kNone;
  for (size_t b = (hole + 1) & index_mask_; index_[b] != kNone; b = (b + 1) & index_mask_) {
    const size_t home = bucket_of(keys_[index_[b]]);
    // Move the entry into the hole when its home is not cyclically in (hole, b].
    const bool stays = hole < b ? (home > hole && home <= b) : (home > hole || home <= b);
    if (!stays) {
      index_[hole] = index_[b];
      index_[b] = kNone;
      hole = b;
    }
  }
}

uint32_t PageCache::insert(uint64_t key) {
  if (capacity_ == 0) return kNone;
  if (size_ == capacity_) {
    ++evictions_;
    remove(keys_[tail_]);
  }
  uint32_t s;
  if (free_head_ != kNone) {  // slots given back by remove(), chained through next_
    s = free_head_;
    free_head_ = next_[s];
  } else {
    s = free_next_++;
  }
  keys_[s] = key;
  size_t b = bucket_of(key);
  while (index_[b] != kNone) b = (b + 1) & index_mask_;
  index_[b] = s;
  push_front(s);
  ++size_;
  return s;
}

void PageCache::remove(uint64_t key) {
  if (capacity_ == 0) return;
  for (size_t b = bucket_of(key);; b = (b + 1) & index_mask_) {
    const uint32_t s = index_[b];
    if (s == kNone) return;
    if (keys_[s] == key) {
      index_erase(b);
      unlink(s);
      next_[s] = free_head_;
      free_head_ = s;
      --size_;
      return;
    }
  }
}

std::vector<uint64_t> PageCache::keys_by_recency() const {
  std::vector<uint64_t> out;
  for (uint32_t s = head_; s != kNone; s = next_[s]) out.push_back(keys_[s]);
  return out;
}

}  // namespace ferry::encoders
