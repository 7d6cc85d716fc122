// encoders/page_cache.h — a bounded cache of page contents, kept identical on both ends.
//
// The sender's Encoder and the receiver's Decoder each own one PageCache of the same capacity
// and policy. Both apply the same update for every record, in record order (see Encoder in
// page_codec.h):
//   zero form                 -> remove(key)
//   any other form, cached    -> touch(slot); the page's new content is stored in slot
//   any other form, uncached  -> insert(key); the content is stored in the slot it returns,
//                                unless the policy declines to admit the page (kNone)
// The cache's state is thus a pure function of the sequence (key, is_zero, content), so "same"
// and delta records are always decoded against exactly the bytes the sender compared with.
// A frozen pair (Encoder/Decoder::freeze_cache(), at the same record) applies no update at all.
//
// Policies (CachePolicy, chosen at create(); values are wire format, see CODEC):
//   kLru        strict LRU. Pathological for cyclic sweeps larger than the cache, which is
//               what QEMU's address-ordered passes are: each page is evicted just before it is
//               sent again, and nothing hits.
//   kAgedClock  (default) a CLOCK hand over the slots, and admission gated by age. Every
//               update is one tick of a logical clock; a hit records its reuse distance (ticks
//               since the page's last update) into a running average R, the length of a pass,
//               and its mean deviation V (as TCP estimates a round trip, RFC 6298). A miss on
//               a full cache looks at the next few slots under the hand and replaces the first
//               whose entry has been idle longer than R + max(R/8, 4V) (it would have been
//               re-sent by now if it were still in the working set); if none is that stale,
//               the page is not admitted. A sweep larger than the cache so keeps a stable
//               subset of it cached (hit rate ~ cache / working set, like an optimal cache),
//               and a working set that moves on frees its entries within about a pass.
//               Misses teach R too: the keys of evicted and refused pages are remembered
//               with their tick in a direct-mapped table of ghosts, and a miss that finds its
//               ghost records the reuse distance it missed by. Without that, a sweep whose
//               pages never hit would never raise R above its first guess (the capacity),
//               and a working set over 1.5x the cache would thrash.
//               The capacity is elastic, sized from the working set: create()'s capacity is
//               a memory budget. The cache starts at the whole budget (pass 2 then finds
//               pass 1's copies); every budget / 64 updates (64..4096) it sets its capacity
//               to 1.125 A, between budget / 16 and the budget, where A is the stale age's
//               peak lowered by at most half the updates since (R dips while part of a pass
//               re-sends pages re-dirtied more often than the rest; room for every entry
//               younger than the stale age leaves a dead one under the hand when the cache
//               is full). It grows at once and shrinks when that
//               saves a quarter: the entries of the slots given up move, most recent first,
//               into free slots and over the stalest entries kept; the memory of the rest
//               goes back to the kernel. Both ends resize at the same record.
//
// Not thread-safe: one owner thread (one cache per encode shard). All memory is allocated in
// create() (page memory reserved there, touched only as slots fill); find/insert/remove/touch
// never allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"

namespace ferry::encoders {

enum class CachePolicy : uint8_t {
  kLru = 0,
  kAgedClock = 1,
};
inline constexpr CachePolicy kDefaultCachePolicy = CachePolicy::kAgedClock;
const char* cache_policy_name(CachePolicy p);
bool valid_cache_policy(uint8_t wire_value);

class PageCache {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;
  // kAgedClock: slots looked at per miss before the page is declined.
  static constexpr unsigned kAdmissionScan = 8;

  // budget_pages may be 0 (a cache that holds nothing: every lookup misses). kLru keeps
  // exactly budget_pages; kAgedClock sizes itself within it (see above).
  static Result<std::unique_ptr<PageCache>> create(size_t page_size, size_t budget_pages,
                                                   CachePolicy policy = kDefaultCachePolicy);
  ~PageCache();

  // Slot holding key, or kNone. Changes nothing.
  uint32_t find(uint64_t key) const;
  // A hit on slot: it becomes the most recently used.
  // Returns the slot the entry is in afterwards: kAgedClock may resize the cache after the
  // update (the entry, now the most recent, is kept but may move).
  uint32_t touch(uint32_t slot);
  // A miss on key (which must not be present): the slot to store its content in, content
  // unspecified until the caller writes it, possibly evicting another entry; or kNone when
  // the capacity is 0 or the policy declines to admit the page (kAgedClock on a full cache
  // with nothing stale under the hand). May resize the cache first (kAgedClock), which
  // moves entries between slots: slots found before an insert() or remove() are stale.
  uint32_t insert(uint64_t key);
  // Drops key if present. May resize the cache first, as insert().
  void remove(uint64_t key);

  uint8_t* data(uint32_t slot) { return data_ + size_t{slot} * page_size_; }
  const uint8_t* data(uint32_t slot) const { return data_ + size_t{slot} * page_size_; }
  uint64_t key(uint32_t slot) const { return keys_[slot]; }

  CachePolicy policy() const { return policy_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }  // now (kAgedClock: follows the working set)
  size_t budget() const { return budget_; }      // the most it may hold
  size_t peak_size() const { return peak_size_; }
  uint64_t resizes() const { return resizes_; }
  size_t page_size() const { return page_size_; }
  uint64_t hits() const { return hits_; }      // touch() calls
  uint64_t misses() const { return misses_; }  // insert() calls
  uint64_t evictions() const { return evictions_; }
  uint64_t declined() const { return declined_; }  // misses not admitted
  // kAgedClock: the running average reuse distance R, in updates (about one pass), its mean
  // deviation V, and the idle time beyond which an entry may be replaced.
  uint64_t reuse_distance() const { return reuse_distance_; }
  uint64_t reuse_deviation() const { return reuse_deviation_; }
  uint64_t stale_age() const;
  // Keys from most to least recently used.
  std::vector<uint64_t> keys_by_recency() const;
  // A digest of the whole replacement state (keys per slot, recency, hand, clock, averages,
  // free slots): equal on both ends after the same records. Tests compare the two ends.
  uint64_t state_digest() const;

 private:
  static constexpr uint64_t kNoKey = UINT64_MAX;  // keys_ of a slot that holds nothing
  PageCache() = default;
  size_t bucket_of(uint64_t key) const;
  void unlink(uint32_t slot);
  void push_front(uint32_t slot);
  void index_erase(size_t bucket);
  // kAgedClock: a slot under the hand idle for longer than the stale age, or kNone.
  uint32_t stale_slot_under_hand();
  void erase_slot(uint32_t slot);
  void note_reuse(uint64_t distance);
  void remember_ghost(uint64_t key, uint64_t tick);
  // kAgedClock: every size_check_ticks_ updates, the capacity the working set asks for.
  void maybe_resize();
  void shrink(size_t new_capacity);
  void move_slot(uint32_t from, uint32_t to);

  CachePolicy policy_ = kDefaultCachePolicy;
  size_t page_size_ = 0;
  size_t capacity_ = 0;
  size_t budget_ = 0;
  size_t size_ = 0;
  size_t peak_size_ = 0;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0, declined_ = 0, resizes_ = 0;
  uint64_t size_check_ticks_ = 0, next_size_check_ = 0;
  // budget_ slots of page memory, mapped at create() and backed as slots are first written.
  uint8_t* data_ = nullptr;
  size_t data_bytes_ = 0;
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> prev_, next_;  // kLru: list through slots; head_ = most recent
  uint32_t head_ = kNone, tail_ = kNone;
  uint32_t free_next_ = 0;      // slots [free_next_, capacity_) never used yet
  uint32_t free_head_ = kNone;  // slots freed by remove(), chained through next_
  // kAgedClock: the clock ticks once per update; last_use_[slot] is the tick of its last one.
  std::vector<uint64_t> last_use_;
  // Ghosts, one per index bucket (bucket_of(key)): key and 1 + tick of its last update, or
  // tick 0 when empty.
  std::vector<uint64_t> ghost_keys_, ghost_ticks_;
  uint64_t now_ = 0;
  uint64_t reuse_distance_ = 0;
  uint64_t reuse_deviation_ = 0;
  uint64_t held_reuse_ = 0;  // A: the stale age's peak, lowered by half the updates since
  uint32_t hand_ = 0;
  std::vector<uint32_t> index_;  // open addressing, linear probing: slot or kNone
  size_t index_mask_ = 0;
  int index_shift_ = 0;
};

}  // namespace ferry::encoders
