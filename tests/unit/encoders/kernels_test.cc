// Every SIMD kernel against the scalar reference: all sizes 0..320 and a few page sizes, every
// alignment 0..63, several byte distributions.
#include "encoders/kernels.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "encoders/internal/kernels_impl.h"

namespace ferry::encoders {
namespace {

std::vector<const Kernels*> simd_variants() {
  std::vector<const Kernels*> v;
  for (const KernelVariant& kv : kernel_variants()) {
    if (kv.available && kv.kernels->level != KernelLevel::kScalar) v.push_back(kv.kernels);
  }
  return v;
}

std::vector<size_t> sizes() {
  std::vector<size_t> s;
  for (size_t n = 0; n <= 320; ++n) s.push_back(n);
  for (size_t n : {511, 512, 513, 1023, 4095, 4096, 4097, 8191, 65536}) s.push_back(n);
  return s;
}

TEST(Kernels, ReportsVariants) {
  const auto v = kernel_variants();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_TRUE(v[0].available);
  for (const KernelVariant& kv : v) {
    if (!kv.available) {
      std::printf("kernel variant unavailable: %s\n", kv.why_not);
    }
  }
  EXPECT_NE(kernels().name, nullptr);
  std::printf("chosen kernels: %s; SIMD variants tested: %zu\n", kernels().name,
              simd_variants().size());
}

TEST(Kernels, SimdMatchesScalarAllSizesAndAlignments) {
  const auto variants = simd_variants();
  if (variants.empty()) GTEST_SKIP() << "no SIMD kernel variant available on this CPU";
  std::mt19937_64 rng(42);
  std::vector<uint8_t> a(65536 + 64 + 64), b(a.size());
  std::vector<uint64_t> ref(bitmap_words(65536) + 1), got(ref.size());
  // Alphabet sizes: 1 (all equal), 2 (many runs), 256 (few runs).
  for (unsigned alphabet : {1u, 2u, 256u}) {
    for (auto& x : a) x = static_cast<uint8_t>(rng() % alphabet);
    b = a;
    for (size_t i = 0; i < b.size(); i += 1 + rng() % 97)
      b[i] ^= static_cast<uint8_t>(1 + rng() % 255);
    for (size_t n : sizes()) {
      for (size_t align = 0; align < 64; align += (n > 4096 ? 13 : 1)) {
        const uint8_t* pa = a.data() + align;
        const uint8_t* pb = b.data() + (63 - align);
        const size_t w = bitmap_words(n);
        for (const Kernels* k : variants) {
          SCOPED_TRACE(testing::Message()
                       << k->name << " n=" << n << " align=" << align << " alphabet=" << alphabet);
          std::fill(ref.begin(), ref.end(), 0xdeadbeef);
          std::fill(got.begin(), got.end(), 0xdeadbeef);
          internal::kScalarKernels.eq_prev_bitmap(pa, n, ref.data());
          k->eq_prev_bitmap(pa, n, got.data());
          ASSERT_TRUE(std::equal(ref.begin(), ref.begin() + w, got.begin()));
          ASSERT_EQ(got[w], 0xdeadbeefu) << "wrote past the bitmap";
          const bool ra = internal::kScalarKernels.diff_bitmap(pa, pb, n, ref.data());
          const bool ga = k->diff_bitmap(pa, pb, n, got.data());
          ASSERT_EQ(ra, ga);
          ASSERT_TRUE(std::equal(ref.begin(), ref.begin() + w, got.begin()));
          ASSERT_EQ(internal::kScalarKernels.is_zero(pa, n), k->is_zero(pa, n));
        }
      }
    }
  }
}

TEST(Kernels, ZeroDetectionFindsEveryByte) {
  std::vector<const Kernels*> all = simd_variants();
  all.push_back(&internal::kScalarKernels);
  std::vector<uint8_t> buf(4096 + 64, 0);
  for (size_t n : {1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4096}) {
    for (size_t align : {0, 1, 7, 31, 63}) {
      uint8_t* p = buf.data() + align;
      for (const Kernels* k : all) {
        ASSERT_TRUE(k->is_zero(p, n)) << k->name << " n=" << n;
        if (isal_is_zero()) {
          ASSERT_TRUE(isal_is_zero()(p, n));
        }
        for (size_t i = 0; i < n; ++i) {
          p[i] = 0x80;
          ASSERT_FALSE(k->is_zero(p, n)) << k->name << " n=" << n << " i=" << i;
          if (isal_is_zero()) {
            ASSERT_FALSE(isal_is_zero()(p, n)) << "isal n=" << n << " i=" << i;
          }
          p[i] = 0;
        }
      }
    }
  }
}

TEST(Kernels, ScalarBitmapDefinition) {
  const uint8_t p[] = {5, 5, 5, 6, 6, 7};
  uint64_t bits = 0;
  internal::kScalarKernels.eq_prev_bitmap(p, sizeof(p), &bits);
  EXPECT_EQ(bits, 0b010110u);
  const uint8_t q[] = {5, 4, 5, 6, 0, 7};
  EXPECT_TRUE(internal::kScalarKernels.diff_bitmap(p, q, sizeof(p), &bits));
  EXPECT_EQ(bits, 0b010010u);
}

}  // namespace
}  // namespace ferry::encoders
