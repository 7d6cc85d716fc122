// Scalar reference kernels: plain loops, the definition the SIMD variants are tested against.
#include <cstring>

#include "encoders/internal/kernels_impl.h"

namespace ferry::encoders::internal {

bool scalar_is_zero(const uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

void scalar_eq_prev_bitmap(const uint8_t* p, size_t n, uint64_t* bits) {
  const size_t words = bitmap_words(n);
  for (size_t k = 0; k < words; ++k) {
    uint64_t w = 0;
    const size_t base = k * 64;
    const size_t end = n - base < 64 ? n - base : 64;
    for (size_t j = 0; j < end; ++j) {
      const size_t i = base + j;
      if (i > 0 && p[i] == p[i - 1]) w |= uint64_t{1} << j;
    }
    bits[k] = w;
  }
}

bool scalar_diff_bitmap(const uint8_t* a, const uint8_t* b, size_t n, uint64_t* bits) {
  const size_t words = bitmap_words(n);
  uint64_t any = 0;
  for (size_t k = 0; k < words; ++k) {
    uint64_t w = 0;
    const size_t base = k * 64;
    const size_t end = n - base < 64 ? n - base : 64;
    for (size_t j = 0; j < end; ++j) {
      if (a[base + j] != b[base + j]) w |= uint64_t{1} << j;
    }
    bits[k] = w;
    any |= w;
  }
  return any != 0;
}

const Kernels kScalarKernels = {
    KernelLevel::kScalar, "scalar", scalar_is_zero, scalar_eq_prev_bitmap, scalar_diff_bitmap,
};

}  // namespace ferry::encoders::internal
