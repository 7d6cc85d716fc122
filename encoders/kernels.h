// encoders/kernels.h — the vectorized building blocks of the page codecs.
//
// Every kernel has a scalar reference and, on x86-64, AVX2 and AVX-512 variants. A variant is
// picked once (first call of kernels()) from common/cpu_features.h, so FERRY_CPU=scalar|avx2
// caps it. The kernels only *classify* bytes (zero test, byte-equality bitmaps); the encoders
// in codecs.h turn those bitmaps into bytes with one shared scalar routine, so every variant
// produces byte-identical encodings (tests check this) and the page caches on both ends never
// depend on which CPU either end runs on.
//
// Bitmaps: bit i of a bitmap lives in word i / 64, bit i % 64. A bitmap for n bytes has
// bitmap_words(n) words; bits at positions >= n are written as 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ferry::encoders {

enum class KernelLevel : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

constexpr size_t bitmap_words(size_t n) { return (n + 63) / 64; }

struct Kernels {
  KernelLevel level;
  const char* name;
  // True when all n bytes at p are zero (n may be 0: true).
  bool (*is_zero)(const uint8_t* p, size_t n);
  // bits[i] = (i > 0 && p[i] == p[i-1]). Runs of equal bytes, for RLE.
  void (*eq_prev_bitmap)(const uint8_t* p, size_t n, uint64_t* bits);
  // bits[i] = (a[i] != b[i]), i.e. (a XOR b) != 0 per byte. Returns true when any bit is set.
  bool (*diff_bitmap)(const uint8_t* a, const uint8_t* b, size_t n, uint64_t* bits);
};

struct KernelVariant {
  const Kernels* kernels;  // null when not built in
  bool available;          // built in and supported by this CPU (after FERRY_CPU)
  const char* why_not;     // reason when !available
};

// The table chosen once from the CPU (thread-safe, never null).
const Kernels& kernels();
// Every variant this build knows of, scalar first; tests and benchmarks iterate these.
std::span<const KernelVariant> kernel_variants();
// The variant for a level, or null when it is not available here.
const Kernels* kernels_for(KernelLevel level);

// Zero detection through ISA-L's isal_zero_detect (null when the build has no ISA-L). ISA-L
// dispatches on its own; the encoder uses it when present unless FERRY_CPU=scalar.
using IsZeroFn = bool (*)(const uint8_t* p, size_t n);
IsZeroFn isal_is_zero();

}  // namespace ferry::encoders
