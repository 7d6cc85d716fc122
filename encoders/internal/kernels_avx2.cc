// AVX2 kernels. Compiled with -mavx2 only (see meson.build); called only when the CPU has AVX2.
//
// Bitmaps are built one 64-bit word (64 bytes) at a time. Each word's 64-byte compare window
// is clamped inside the buffer (start >= 1 for the "previous byte" load, end <= n), and the
// resulting mask is shifted into place, so no load ever leaves [p, p + n) and no scalar loop
// is needed except for buffers shorter than one window.
#include <immintrin.h>

#include "encoders/internal/kernels_impl.h"

namespace ferry::encoders::internal {
namespace {

inline uint64_t eq_mask64(const uint8_t* x, const uint8_t* y) {
  const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32));
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
  const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32));
  const uint32_t lo = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a0, b0)));
  const uint32_t hi = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(a1, b1)));
  return (uint64_t{hi} << 32) | lo;
}

bool avx2_is_zero(const uint8_t* p, size_t n) {
  if (n < 32) return scalar_is_zero(p, n);
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const __m256i v = _mm256_or_si256(
        _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32))),
        _mm256_or_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96))));
    if (!_mm256_testz_si256(v, v)) return false;
  }
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    if (!_mm256_testz_si256(v, v)) return false;
  }
  if (i < n) {  // overlapping last window
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + n - 32));
    if (!_mm256_testz_si256(v, v)) return false;
  }
  return true;
}

void avx2_eq_prev_bitmap(const uint8_t* p, size_t n, uint64_t* bits) {
  if (n < 65) return scalar_eq_prev_bitmap(p, n, bits);
  const size_t words = bitmap_words(n);
  for (size_t k = 0; k < words; ++k) {
    const size_t base = k * 64;
    size_t q = base < 1 ? 1 : base;
    if (q > n - 64) q = n - 64;
    const uint64_t m = eq_mask64(p + q, p + q - 1);  // bit j: position q + j
    bits[k] = q >= base ? m << (q - base) : m >> (base - q);
  }
}

bool avx2_diff_bitmap(const uint8_t* a, const uint8_t* b, size_t n, uint64_t* bits) {
  if (n < 64) return scalar_diff_bitmap(a, b, n, bits);
  const size_t words = bitmap_words(n);
  uint64_t any = 0;
  for (size_t k = 0; k < words; ++k) {
    const size_t base = k * 64;
    const size_t q = base > n - 64 ? n - 64 : base;
    const uint64_t w = ~eq_mask64(a + q, b + q) >> (base - q);
    bits[k] = w;
    any |= w;
  }
  return any != 0;
}

}  // namespace

const Kernels kAvx2Kernels = {
    KernelLevel::kAvx2, "avx2", avx2_is_zero, avx2_eq_prev_bitmap, avx2_diff_bitmap,
};

}  // namespace ferry::encoders::internal
