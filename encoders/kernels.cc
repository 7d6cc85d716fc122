// Kernel dispatch: one table picked at first use from the CPU flags (FERRY_CPU caps them).
#include "encoders/kernels.h"

#include "common/cpu_features.h"
#include "encoders/internal/kernels_impl.h"

#if FERRY_HAVE_ISAL
#include <isa-l/mem_routines.h>
#endif

namespace ferry::encoders {
namespace {

std::span<const KernelVariant> build_variants() {
  static KernelVariant v[3];
  const CpuFeatures& f = cpu_features();
  v[0] = {&internal::kScalarKernels, true, ""};
#if FERRY_HAVE_X86_KERNELS
  v[1] = {&internal::kAvx2Kernels, f.avx2,
          f.avx2 ? "" : "CPU lacks AVX2 (or FERRY_CPU=scalar caps it)"};
  const bool has512 = f.avx512f && f.avx512bw;
  v[2] = {&internal::kAvx512Kernels, has512,
          has512 ? "" : "CPU lacks AVX-512F/BW (or FERRY_CPU caps it)"};
#else
  (void)f;
  v[1] = {nullptr, false, "not an x86-64 build"};
  v[2] = {nullptr, false, "not an x86-64 build"};
#endif
  return {v, 3};
}

#if FERRY_HAVE_ISAL
bool isal_zero(const uint8_t* p, size_t n) {
  return isal_zero_detect(const_cast<uint8_t*>(p), n) == 0;
}
#endif

}  // namespace

std::span<const KernelVariant> kernel_variants() {
  static const std::span<const KernelVariant> variants = build_variants();
  return variants;
}

const Kernels* kernels_for(KernelLevel level) {
  for (const KernelVariant& v : kernel_variants()) {
    if (v.available && v.kernels->level == level) return v.kernels;
  }
  return nullptr;
}

const Kernels& kernels() {
  static const Kernels* chosen = [] {
    const Kernels* best = &internal::kScalarKernels;
    for (const KernelVariant& v : kernel_variants()) {
      if (v.available) best = v.kernels;  // listed from weakest to strongest
    }
    return best;
  }();
  return *chosen;
}

IsZeroFn isal_is_zero() {
#if FERRY_HAVE_ISAL
  return isal_zero;
#else
  return nullptr;
#endif
}

}  // namespace ferry::encoders
