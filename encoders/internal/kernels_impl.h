// encoders/internal/kernels_impl.h — the per-ISA kernel tables (private).
//
// Each table lives in its own file, compiled with only its own ISA flags (see meson.build), so
// nothing outside kernels_avx2.cc / kernels_avx512.cc can emit those instructions by accident.
#pragma once

#include <cstddef>
#include <cstdint>

#include "encoders/kernels.h"

namespace ferry::encoders::internal {

extern const Kernels kScalarKernels;
#if FERRY_HAVE_X86_KERNELS
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;
#endif

// Scalar pieces shared by the SIMD files for inputs too short for a full vector window.
bool scalar_is_zero(const uint8_t* p, size_t n);
void scalar_eq_prev_bitmap(const uint8_t* p, size_t n, uint64_t* bits);
bool scalar_diff_bitmap(const uint8_t* a, const uint8_t* b, size_t n, uint64_t* bits);

}  // namespace ferry::encoders::internal
