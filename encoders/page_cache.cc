#include "encoders/page_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
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

PageCache::~PageCache() {
  if (data_ != nullptr) munmap(data_, data_bytes_);
}

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
  c->budget_ = capacity_pages;
  c->size_check_ticks_ = std::clamp<uint64_t>(capacity_pages / 64, 64, 4096);
  c->next_size_check_ = c->size_check_ticks_;
  // Before the first hit there is no measured pass length; a cache's worth of updates keeps
  // a sweep's first entries while the first pass fills the cache.
  c->reuse_distance_ = capacity_pages;
  c->held_reuse_ = capacity_pages;
  if (capacity_pages > 0) {
    // Reserved, not committed: the kernel backs a slot when it is first written, so a cache
    // whose working set is smaller than the budget costs what it holds.
    const size_t bytes = page_size * capacity_pages;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      return error(
          ErrorCode::kUnavailable,
          "page cache: cannot reserve " + std::to_string(bytes >> 20) + " MiB; lower --cache-mib");
    }
    c->data_ = static_cast<uint8_t*>(mem);
    c->data_bytes_ = bytes;
    size_t buckets = 16;
    int bits = 4;
    while (buckets < 2 * capacity_pages) {
      buckets <<= 1;
      ++bits;
    }
    try {
      c->keys_.assign(capacity_pages, kNoKey);
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

uint32_t PageCache::touch(uint32_t s) {
  ++hits_;
  if (policy_ == CachePolicy::kAgedClock) {
    note_reuse(now_ - last_use_[s]);
    last_use_[s] = now_++;
    // A working set that fits is all hits: the capacity is checked here too, after the
    // update, so the touched entry is the most recent and a shrink keeps it.
    if (now_ < next_size_check_) return s;
    const uint64_t key = keys_[s];
    maybe_resize();
    return find(key);
  }
  if (head_ != s) {
    unlink(s);
    push_front(s);
  }
  return s;
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
    maybe_resize();
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
  peak_size_ = std::max(peak_size_, size_);
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
  keys_[s] = kNoKey;
  next_[s] = free_head_;
  free_head_ = s;
  --size_;
}

void PageCache::remove(uint64_t key) {
  if (capacity_ == 0) return;
  if (policy_ == CachePolicy::kAgedClock) {
    maybe_resize();
    // A zero page is part of the pass too: the clock counts every record.
    ++now_;
  }
  const uint32_t s = find(key);
  if (s != kNone) erase_slot(s);
}

void PageCache::maybe_resize() {
  if (now_ < next_size_check_) return;
  next_size_check_ = now_ + size_check_ticks_;
  // Room for every entry younger than the stale age: a full cache then always has a dead
  // entry under the hand. R follows the last few reuses and dips while part of a pass holds
  // pages re-dirtied more often than the rest (kernel pages, say), so the stale age is held
  // at its peak and lowered by at most half the updates since: a dip costs half what it
  // lasted, and a working set that really shrank is followed within about two of its old
  // passes. R counts every update of a pass, zero pages included: a generous working set.
  const uint64_t lower = size_check_ticks_ / 2;
  held_reuse_ = std::max(stale_age(), held_reuse_ - std::min(held_reuse_, lower));
  const size_t floor = std::max<size_t>(budget_ / 16, std::min<size_t>(budget_, 64));
  const size_t want = std::clamp<size_t>(held_reuse_ + held_reuse_ / 8, floor, budget_);
  if (want > capacity_) {
    // Slots past the old capacity hold nothing (a shrink emptied them), so they join the
    // never-used range as they are: growing only moves the limit.
    capacity_ = want;
    ++resizes_;
  } else if (want < capacity_ - capacity_ / 4) {
    shrink(want);
  }
}

void PageCache::move_slot(uint32_t from, uint32_t to) {
  for (size_t b = bucket_of(keys_[from]);; b = (b + 1) & index_mask_) {
    if (index_[b] == from) {
      index_[b] = to;
      break;
    }
  }
  keys_[to] = keys_[from];
  last_use_[to] = last_use_[from];
  std::memcpy(data(to), data(from), page_size_);
  keys_[from] = kNoKey;
}

// Keeps the most recently used entries: those of the slots given up move, hottest first,
// into free slots below the new capacity, then over the stalest entries kept while those are
// older. What does not fit is evicted (remembered as ghosts, as any eviction).
void PageCache::shrink(size_t new_capacity) {
  const uint32_t cap = static_cast<uint32_t>(new_capacity);
  std::vector<uint32_t> given_up, kept_free, kept_used;
  for (uint32_t s = 0; s < std::min<uint32_t>(free_next_, static_cast<uint32_t>(capacity_)); ++s) {
    if (s >= cap) {
      if (keys_[s] != kNoKey) given_up.push_back(s);
    } else if (keys_[s] == kNoKey) {
      kept_free.push_back(s);
    } else {
      kept_used.push_back(s);
    }
  }
  for (uint32_t s = std::min(free_next_, cap); s < cap; ++s) kept_free.push_back(s);
  // Ticks are unique per update, so both orders are total and the same on both ends.
  std::sort(given_up.begin(), given_up.end(),
            [&](uint32_t a, uint32_t b) { return last_use_[a] > last_use_[b]; });
  std::sort(kept_used.begin(), kept_used.end(),
            [&](uint32_t a, uint32_t b) { return last_use_[a] < last_use_[b]; });
  size_t next_free = 0, next_stale = 0;
  for (const uint32_t from : given_up) {
    uint32_t to = kNone;
    if (next_free < kept_free.size()) {
      to = kept_free[next_free++];
    } else if (next_stale < kept_used.size() &&
               last_use_[kept_used[next_stale]] < last_use_[from]) {
      to = kept_used[next_stale++];
      ++evictions_;
      remember_ghost(keys_[to], last_use_[to]);
      erase_slot(to);
    }
    if (to == kNone) {
      ++evictions_;
      remember_ghost(keys_[from], last_use_[from]);
      erase_slot(from);
    } else {
      move_slot(from, to);
    }
  }
  // Every slot below the new capacity not holding an entry is free (moves may have used
  // slots past free_next_); rebuild the chain in slot order so both ends hand out the same.
  free_next_ = cap;
  free_head_ = kNone;
  for (uint32_t s = free_next_; s-- > 0;) {
    if (keys_[s] == kNoKey) {
      next_[s] = free_head_;
      free_head_ = s;
    }
  }
  if (hand_ >= cap) hand_ = 0;
  // Give the memory of the slots above back; they read as zeros if the cache grows again.
  const uintptr_t host_page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t from =
      (reinterpret_cast<uintptr_t>(data(cap)) + host_page - 1) & ~(host_page - 1);
  const uintptr_t to = reinterpret_cast<uintptr_t>(data_ + data_bytes_) & ~(host_page - 1);
  if (to > from) madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
  capacity_ = new_capacity;
  ++resizes_;
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
  mix(capacity_);
  mix(resizes_);
  mix(now_);
  mix(reuse_distance_);
  mix(reuse_deviation_);
  mix(held_reuse_);
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
