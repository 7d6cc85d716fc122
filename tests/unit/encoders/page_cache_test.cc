// PageCache against a trivially correct LRU model (std::list), under random operations.
#include "encoders/page_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <random>

namespace ferry::encoders {
namespace {

TEST(PageCache, MatchesReferenceLru) {
  for (size_t cap : {0, 1, 2, 7, 64, 1000}) {
    auto c = PageCache::create(64, cap);
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

TEST(PageCache, RejectsBadPageSize) {
  EXPECT_FALSE(PageCache::create(100, 4).has_value());
  EXPECT_FALSE(PageCache::create(0, 4).has_value());
}

}  // namespace
}  // namespace ferry::encoders
