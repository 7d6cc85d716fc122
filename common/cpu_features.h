// common/cpu_features.h — what the CPU can do, read once from CPUID.
//
// SIMD kernels are chosen once at start from these flags (see encoders/), never per call.
// FERRY_CPU=scalar|avx2|avx512 caps what is reported, so tests and benchmarks can force a
// variant and a user can work around a misbehaving one.
#pragma once

namespace ferry {

struct CpuFeatures {
  bool sse42 = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
};

// Thread-safe; computed on first call.
const CpuFeatures& cpu_features();

}  // namespace ferry
