// Differential fuzzing of RLE: (1) the input as an encoding: rle_decode must agree with the
// byte-at-a-time reference (both reject, or both produce the same page) and never write past
// the page; (2) the input as page content: every kernel variant must produce the same bytes,
// and they must decode back to the page.
#include <cstring>
#include <vector>

#include "encoders/codecs.h"
#include "tests/fuzz/encoders/fuzz_reference.h"

using namespace ferry::encoders;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // (1) decode; the page size comes from the input length so short pages are reached too.
  const size_t n = 512 + (size % 4) * 1024;
  std::vector<uint8_t> out(n + 64, 0xee), ref;
  const DecodeResult r = rle_decode(data, size, out.data(), n);
  const bool ref_ok = fuzz::ref_rle_decode(data, size, n, &ref);
  if (r.ok() != ref_ok) fuzz::fuzz_fail();
  if (r.ok() && std::memcmp(ref.data(), out.data(), n) != 0) fuzz::fuzz_fail();
  if (!r.ok() && r.offset > size) fuzz::fuzz_fail();
  for (size_t g = n; g < out.size(); ++g) {
    if (out[g] != 0xee) fuzz::fuzz_fail();
  }

  // (2) encode the input itself (at least 1 byte, at most one 64 KiB page).
  if (size == 0 || size > kMaxPageSize) return 0;
  std::vector<uint64_t> bits(rle_scratch_words(size));
  std::vector<uint8_t> first, enc(2 * size + 16);
  for (const KernelVariant& kv : kernel_variants()) {
    if (!kv.available) continue;
    const size_t len = rle_encode(*kv.kernels, data, size, enc.data(), enc.size(), bits.data());
    if (len == kTooBig) fuzz::fuzz_fail();
    std::vector<uint8_t> e(enc.begin(), enc.begin() + len);
    if (first.empty()) first = e;
    if (e != first) fuzz::fuzz_fail();
    std::vector<uint8_t> back(size);
    if (!rle_decode(e.data(), e.size(), back.data(), size).ok()) fuzz::fuzz_fail();
    if (std::memcmp(back.data(), data, size) != 0) fuzz::fuzz_fail();
    // A capacity one byte short must be refused, not overrun.
    if (len > 0 && rle_encode(*kv.kernels, data, size, enc.data(), len - 1, bits.data()) != kTooBig)
      fuzz::fuzz_fail();
  }
  return 0;
}
