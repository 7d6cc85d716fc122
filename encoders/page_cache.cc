#include "encoders/page_cache.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>

namespace ferry::encoders {

const char* cache_policy_name(CachePolicy p) {
  switch (p) {
    case CachePolicy::kLru:
      return "lru";
    case CachePolicy::kAgedClock:
      return "aged-clock";
  }
  return "?";
}

bool valid_cache_policy(uint8_t wire_value) {
  return wire_value <= static_cast<uint8_t>(CachePolicy::kAgedClock);
}

void PageCache::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

Result<std::unique_ptr<PageCache>> PageCache::create(size_t page_size, size_t capacity_pages,
                                                     CachePolicy policy) {
  if (page_size == 0 || page_size % 64 != 0) {
    return error(ErrorCode::kInvalidArgument, "page cache: page size " + std::to_string(page_size) +
                                                  " is not a positive multiple of 64");
  }
  if (capacity_pages >= PageCache::kNone / 2) {
    return error(ErrorCode::kInvalidArgument, "page cache: capacity too large");
  }
  if (!valid_cache_policy(static_cast<uint8_t>(policy))) {
    return error(ErrorCode::kInvalidArgument, "page cache: unknown policy");
  }
  std::unique_ptr<PageCache> c(new PageCache());
  c->policy_ = policy;
  c->page_size_ = page_size;
  c->capacity_ = capacity_pages;
  // Before the first hit there is no measured pass length; a cache's worth of updates keeps
  // a sweep's first entries while the first pass fills the cache.
  c->reuse_distance_ = capacity_pages;
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
      if (policy == CachePolicy::kAgedClock) {
        c->last_use_.resize(capacity_pages);
        c->ghost_keys_.resize(buckets);
        c->ghost_ticks_.resize(buckets);
      }
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

// Running averages with RFC 6298's gains (1/8 for the mean, 1/4 for the deviation), in
// integers so that both ends compute the same values.
void PageCache::note_reuse(uint64_t distance) {
  const uint64_t error =
      distance >= reuse_distance_ ? distance - reuse_distance_ : reuse_distance_ - distance;
  if (error >= reuse_deviation_) {
    reuse_deviation_ += (error - reuse_deviation_) / 4;
  } else {
    reuse_deviation_ -= (reuse_deviation_ - error) / 4;
  }
  if (distance >= reuse_distance_) {
    reuse_distance_ += (distance - reuse_distance_) / 8;
  } else {
    reuse_distance_ -= (reuse_distance_ - distance) / 8;
  }
}

uint64_t PageCache::stale_age() const {
  return reuse_distance_ + std::max(reuse_distance_ / 8, 4 * reuse_deviation_);
}

void PageCache::remember_ghost(uint64_t key, uint64_t tick) {
  const size_t b = bucket_of(key);
  ghost_keys_[b] = key;
  ghost_ticks_[b] = tick + 1;
}

void PageCache::touch(uint32_t s) {
  ++hits_;
  if (policy_ == CachePolicy::kAgedClock) {
    note_reuse(now_ - last_use_[s]);
    last_use_[s] = now_++;
    return;
  }
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

uint32_t PageCache::stale_slot_under_hand() {
  const uint64_t idle_limit = stale_age();
  for (unsigned i = 0; i < kAdmissionScan; ++i) {
    const uint32_t s = hand_;
    hand_ = hand_ + 1 == capacity_ ? 0 : hand_ + 1;
    if (now_ - last_use_[s] > idle_limit) return s;
  }
  return kNone;
}

uint32_t PageCache::insert(uint64_t key) {
  if (capacity_ == 0) return kNone;
  ++misses_;
  if (policy_ == CachePolicy::kAgedClock) {
    const size_t g = bucket_of(key);
    if (ghost_ticks_[g] != 0 && ghost_keys_[g] == key) {
      note_reuse(now_ - (ghost_ticks_[g] - 1));
      ghost_ticks_[g] = 0;
    }
  }
  if (size_ == capacity_) {
    if (policy_ == CachePolicy::kLru) {
      ++evictions_;
      remove(keys_[tail_]);
    } else {
      const uint32_t victim = stale_slot_under_hand();
      if (victim == kNone) {
        ++declined_;
        remember_ghost(key, now_++);
        return kNone;
      }
      ++evictions_;
      remember_ghost(keys_[victim], last_use_[victim]);
      erase_slot(victim);
    }
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
  if (policy_ == CachePolicy::kAgedClock) {
    last_use_[s] = now_++;
  } else {
    push_front(s);
  }
  ++size_;
  return s;
}

void PageCache::erase_slot(uint32_t s) {
  const uint64_t key = keys_[s];
  for (size_t b = bucket_of(key);; b = (b + 1) & index_mask_) {
    if (index_[b] == s) {
      index_erase(b);
      break;
    }
  }
  if (policy_ == CachePolicy::kLru) unlink(s);
  next_[s] = free_head_;
  free_head_ = s;
  --size_;
}

void PageCache::remove(uint64_t key) {
  if (capacity_ == 0) return;
  // A zero page is part of the pass too: the clock counts every record.
  if (policy_ == CachePolicy::kAgedClock) ++now_;
  const uint32_t s = find(key);
  if (s != kNone) erase_slot(s);
}

std::vector<uint64_t> PageCache::keys_by_recency() const {
  std::vector<uint64_t> out;
  if (policy_ == CachePolicy::kLru) {
    for (uint32_t s = head_; s != kNone; s = next_[s]) out.push_back(keys_[s]);
    return out;
  }
  // Every update has its own tick, so the order is total.
  std::vector<uint32_t> slots;
  for (uint32_t s = 0; s < capacity_; ++s) {
    if (s < free_next_ && find(keys_[s]) == s) slots.push_back(s);
  }
  std::sort(slots.begin(), slots.end(),
            [&](uint32_t a, uint32_t b) { return last_use_[a] > last_use_[b]; });
  for (uint32_t s : slots) out.push_back(keys_[s]);
  return out;
}

uint64_t PageCache::state_digest() const {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; };
  mix(size_);
  mix(now_);
  mix(reuse_distance_);
  mix(reuse_deviation_);
  mix(hand_);
  mix(free_next_);
  mix(free_head_);
  mix(head_);
  mix(evictions_);
  mix(declined_);
  for (size_t b = 0; b < ghost_ticks_.size(); ++b) {
    if (ghost_ticks_[b] != 0) mix(ghost_keys_[b] ^ ghost_ticks_[b] << 1);
  }
  for (uint32_t s = 0; s < free_next_; ++s) {
    const bool present = find(keys_[s]) == s;
    mix(present ? keys_[s] : ~0ull);
    if (present && policy_ == CachePolicy::kAgedClock) mix(last_use_[s]);
    if (present && policy_ == CachePolicy::kLru) mix(next_[s]);
  }
  return h;
}

}  // namespace ferry::encoders
