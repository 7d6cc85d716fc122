// PageCache against trivially correct models of its policies (std::list for LRU, a plain
// array of slots for the aged CLOCK), under random operations.
#include "encoders/page_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <list>
#include <map>
#include <random>

namespace ferry::encoders {
namespace {

TEST(PageCache, MatchesReferenceLru) {
  for (size_t cap : {0, 1, 2, 7, 64, 1000}) {
    auto c = PageCache::create(64, cap, CachePolicy::kLru);
    ASSERT_TRUE(c.has_value()) << c.status().message();
    PageCache& cache = **c;
    std::list<uint64_t> model;  // front = most recent
    std::mt19937_64 rng(cap);
    const uint64_t key_space = cap * 2 + 3;
    for (int op = 0; op < 200000; ++op) {
      const uint64_t key = rng() % key_space * 0x100000001ull;  // collide in low bits
      const auto it = std::find(model.begin(), model.end(), key);
      const uint32_t slot = cache.find(key);
      ASSERT_EQ(slot != PageCache::kNone, it != model.end()) << "op " << op;
      switch (rng() % 3) {
        case 0:  // remove
          cache.remove(key);
          if (it != model.end()) model.erase(it);
          break;
        default:  // store (insert or touch), as the codecs do
          if (slot != PageCache::kNone) {
            ASSERT_EQ(cache.key(slot), key);
            cache.touch(slot);
            model.erase(it);
            model.push_front(key);
            ASSERT_EQ(cache.data(slot)[0], static_cast<uint8_t>(key));
          } else {
            const uint32_t s = cache.insert(key);
            if (cap == 0) {
              ASSERT_EQ(s, PageCache::kNone);
              break;
            }
            ASSERT_NE(s, PageCache::kNone);
            cache.data(s)[0] = static_cast<uint8_t>(key);
            model.push_front(key);
            if (model.size() > cap) model.pop_back();
          }
      }
      ASSERT_EQ(cache.size(), model.size());
      if (op % 997 == 0) {
        ASSERT_EQ(cache.keys_by_recency(), std::vector<uint64_t>(model.begin(), model.end()));
      }
    }
  }
}

// The aged CLOCK written as plainly as possible: slots in an array, the clock, the hand, the
// running reuse distance, the capacity that follows it. Slot numbers must match too (both
// ends index data by slot).
struct AgedClockModel {
  struct Slot {
    bool used = false;
    uint64_t key = 0, last_use = 0;
  };
  std::vector<Slot> slots;
  std::vector<uint32_t> freed;  // most recently freed last
  uint32_t never_used = 0, hand = 0;
  uint64_t now = 0, reuse, deviation = 0;
  // Ghosts: direct-mapped by the cache's documented hash, 2 * capacity rounded up to a power
  // of two buckets (at least 16).
  std::vector<std::pair<uint64_t, uint64_t>> ghosts;  // key, 1 + tick; 0 = empty
  int ghost_bits = 4;
  size_t budget, capacity;
  uint64_t check_every, next_check, held;
  explicit AgedClockModel(size_t cap)
      : slots(cap),
        reuse(cap),
        budget(cap),
        capacity(cap),
        check_every(std::clamp<uint64_t>(cap / 64, 64, 4096)),
        next_check(check_every),
        held(cap) {
    while ((size_t{1} << ghost_bits) < 2 * cap) ++ghost_bits;
    ghosts.resize(size_t{1} << ghost_bits);
  }
  void maybe_resize() {
    if (now < next_check) return;
    next_check = now + check_every;
    const size_t floor = std::max<size_t>(budget / 16, std::min<size_t>(budget, 64));
    const uint64_t stale_age = reuse + std::max(reuse / 8, 4 * deviation);
    held = std::max(stale_age, held > check_every / 2 ? held - check_every / 2 : 0);
    const size_t want = std::clamp<size_t>(held + held / 8, floor, budget);
    if (want > capacity) capacity = want;
    if (want < capacity - capacity / 4) shrink(want);
  }
  void forget(int s) {  // an eviction: the entry becomes a ghost
    ghost(slots[s].key) = {slots[s].key, 1 + slots[s].last_use};
    slots[s].used = false;
  }
  // Entries above the new capacity move, most recent first, to free slots below it, then
  // over kept entries older than themselves (stalest first); the rest are evicted.
  void shrink(size_t cap) {
    std::vector<int> above, kept_free, kept_used;
    for (size_t s = 0; s < capacity; ++s) {
      const int i = static_cast<int>(s);
      if (s >= cap) {
        if (slots[s].used) above.push_back(i);
      } else {
        (slots[s].used ? kept_used : kept_free).push_back(i);
      }
    }
    auto age = [&](int s) { return slots[s].last_use; };
    std::sort(above.begin(), above.end(), [&](int a, int b) { return age(a) > age(b); });
    std::sort(kept_used.begin(), kept_used.end(), [&](int a, int b) { return age(a) < age(b); });
    size_t f = 0, u = 0;
    for (const int from : above) {
      int to = -1;
      if (f < kept_free.size()) {
        to = kept_free[f++];
      } else if (u < kept_used.size() && age(kept_used[u]) < age(from)) {
        to = kept_used[u++];
        forget(to);
      }
      if (to < 0) {
        forget(from);
      } else {
        slots[to] = slots[from];
        slots[from].used = false;
      }
    }
    freed.clear();  // the lowest free slot is handed out first
    for (size_t s = cap; s-- > 0;) {
      if (!slots[s].used) freed.push_back(static_cast<uint32_t>(s));
    }
    never_used = static_cast<uint32_t>(cap);
    if (hand >= cap) hand = 0;
    capacity = cap;
  }
  std::pair<uint64_t, uint64_t>& ghost(uint64_t key) {
    return ghosts[(key * 0x9E3779B97F4A7C15ull) >> (64 - ghost_bits)];
  }
  void note_reuse(uint64_t distance) {
    const int64_t d = static_cast<int64_t>(distance), r = static_cast<int64_t>(reuse);
    const int64_t v = static_cast<int64_t>(deviation);
    deviation = static_cast<uint64_t>(v + (std::abs(d - r) - v) / 4);  // C++ truncates to 0
    reuse = static_cast<uint64_t>(r + (d - r) / 8);
  }

  int find(uint64_t key) const {
    for (size_t s = 0; s < slots.size(); ++s) {
      if (slots[s].used && slots[s].key == key) return static_cast<int>(s);
    }
    return -1;
  }
  size_t size() const {
    return static_cast<size_t>(
        std::count_if(slots.begin(), slots.end(), [](const Slot& s) { return s.used; }));
  }
  void free_slot(int s) {
    slots[s].used = false;
    freed.push_back(static_cast<uint32_t>(s));
  }
  void touch(int s) {
    note_reuse(now - slots[s].last_use);
    slots[s].last_use = now++;
    maybe_resize();
  }
  void remove(uint64_t key) {
    if (slots.empty()) return;
    maybe_resize();
    ++now;
    if (const int s = find(key); s >= 0) free_slot(s);
  }
  int insert(uint64_t key) {
    if (slots.empty()) return -1;
    maybe_resize();
    if (auto& g = ghost(key); g.second != 0 && g.first == key) {
      note_reuse(now - (g.second - 1));
      g.second = 0;
    }
    if (size() == capacity) {
      int victim = -1;
      for (unsigned i = 0; i < PageCache::kAdmissionScan && victim < 0; ++i) {
        if (now - slots[hand].last_use > reuse + std::max(reuse / 8, 4 * deviation)) {
          victim = static_cast<int>(hand);
        }
        hand = (hand + 1) % capacity;
      }
      if (victim < 0) {
        ghost(key) = {key, 1 + now++};
        return -1;
      }
      ghost(slots[victim].key) = {slots[victim].key, 1 + slots[victim].last_use};
      free_slot(victim);
    }
    uint32_t s;
    if (!freed.empty()) {
      s = freed.back();
      freed.pop_back();
    } else {
      s = never_used++;
    }
    slots[s] = {true, key, now++};
    return static_cast<int>(s);
  }
};

TEST(PageCache, AgedClockMatchesReferenceModel) {
  for (size_t cap : {0, 1, 2, 7, 64, 1000}) {
    auto c = PageCache::create(64, cap, CachePolicy::kAgedClock);
    ASSERT_TRUE(c.has_value()) << c.status().message();
    PageCache& cache = **c;
    AgedClockModel model(cap);
    std::mt19937_64 rng(cap + 100);
    // Rotate phases: a hot set that fits, a sweep over a larger one, a sweep over a small
    // one, so that admissions, refusals, shrinks and growth all happen.
    uint64_t declined = 0;
    bool resized = false;
    for (int op = 0; op < 200000; ++op) {
      const int phase = (op / 20000) % 3;
      const uint64_t key_space = phase == 1   ? cap * 3 / 2 + 3
                                 : phase == 2 ? cap / 4 + 3
                                              : cap / 2 + 3;
      const uint64_t key =
          (phase == 0 ? rng() % key_space : static_cast<uint64_t>(op) % key_space) *
          0x100000001ull;  // collide in low bits
      const int want = model.find(key);
      const uint32_t slot = cache.find(key);
      ASSERT_EQ(slot, want < 0 ? PageCache::kNone : static_cast<uint32_t>(want)) << "op " << op;
      if (rng() % 8 == 0) {  // a zero page
        cache.remove(key);
        model.remove(key);
      } else if (slot != PageCache::kNone) {
        cache.touch(slot);
        model.touch(want);
      } else {
        const uint32_t s = cache.insert(key);
        const int m = model.insert(key);
        ASSERT_EQ(s, m < 0 ? PageCache::kNone : static_cast<uint32_t>(m)) << "op " << op;
        if (s == PageCache::kNone && cap > 0) ++declined;
      }
      ASSERT_EQ(cache.size(), model.size());
      ASSERT_EQ(cache.reuse_distance(), model.reuse) << "op " << op;
      ASSERT_EQ(cache.reuse_deviation(), model.deviation) << "op " << op;
      ASSERT_EQ(cache.capacity(), model.capacity) << "op " << op;
      resized |= cache.capacity() != cap;
    }
    EXPECT_EQ(cache.declined(), declined);
    if (cap >= 7) {
      EXPECT_GT(declined, 0u) << "the sweeps must have been refused admission";
    }
    if (cap >= 1000) {
      EXPECT_TRUE(resized) << "the small sweeps must have shrunk the cache";
      EXPECT_GT(cache.resizes(), 2u);
    }
  }
}

TEST(PageCache, RejectsBadPageSize) {
  EXPECT_FALSE(PageCache::create(100, 4).has_value());
  EXPECT_FALSE(PageCache::create(0, 4).has_value());
}

}  // namespace
}  // namespace ferry::encoders
