// AVX-512 kernels. Compiled with -mavx512f -mavx512bw only (see meson.build); called only when
// the CPU has AVX-512F and AVX-512BW. Same window scheme as kernels_avx2.cc.
#include <immintrin.h>

#include "encoders/internal/kernels_impl.h"

namespace ferry::encoders::internal {
namespace {

inline uint64_t eq_mask64(const uint8_t* x, const uint8_t* y) {
  return _mm512_cmpeq_epi8_mask(_mm512_loadu_si512(x), _mm512_loadu_si512(y));
}

bool avx512_is_zero(const uint8_t* p, size_t n) {
  if (n < 64) return scalar_is_zero(p, n);
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    const __m512i v = _mm512_or_si512(
        _mm512_or_si512(_mm512_loadu_si512(p + i), _mm512_loadu_si512(p + i + 64)),
        _mm512_or_si512(_mm512_loadu_si512(p + i + 128), _mm512_loadu_si512(p + i + 192)));
    if (_mm512_test_epi64_mask(v, v) != 0) return false;
  }
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(p + i);
    if (_mm512_test_epi64_mask(v, v) != 0) return false;
  }
  if (i < n) {
    const __m512i v = _mm512_loadu_si512(p + n - 64);
    if (_mm512_test_epi64_mask(v, v) != 0) return false;
  }
  return true;
}

void avx512_eq_prev_bitmap(const uint8_t* p, size_t n, uint64_t* bits) {
  if (n < 65) return scalar_eq_prev_bitmap(p, n, bits);
  const size_t words = bitmap_words(n);
  for (size_t k = 0; k < words; ++k) {
    const size_t base = k * 64;
    size_t q = base < 1 ? 1 : base;
    if (q > n - 64) q = n - 64;
    const uint64_t m = eq_mask64(p + q, p + q - 1);
    bits[k] = q >= base ? m << (q - base) : m >> (base - q);
  }
}

bool avx512_diff_bitmap(const uint8_t* a, const uint8_t* b, size_t n, uint64_t* bits) {
  if (n < 64) return scalar_diff_bitmap(a, b, n, bits);
  const size_t words = bitmap_words(n);
  uint64_t any = 0;
  for (size_t k = 0; k < words; ++k) {
    const size_t base = k * 64;
    const size_t q = base > n - 64 ? n - 64 : base;
    const uint64_t w =
        _mm512_cmpneq_epi8_mask(_mm512_loadu_si512(a + q), _mm512_loadu_si512(b + q)) >> (base - q);
    bits[k] = w;
    any |= w;
  }
  return any != 0;
}

}  // namespace

const Kernels kAvx512Kernels = {
    KernelLevel::kAvx512, "avx512", avx512_is_zero, avx512_eq_prev_bitmap, avx512_diff_bitmap,
};

}  // namespace ferry::encoders::internal
