#include "common/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace ferry {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
#endif
  if (const char* cap = std::getenv("FERRY_CPU")) {
    if (std::strcmp(cap, "scalar") == 0) f = CpuFeatures{};
    if (std::strcmp(cap, "avx2") == 0) f.avx512f = f.avx512bw = f.avx512vl = false;
  }
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace ferry
