// Differential fuzzing of delta: (1) the input as an encoding applied to a fixed base: the fast
// decoder must agree with the reference and stay inside the page; (2) the input as an edit
// script on the base (offset/value pairs): every kernel variant must encode the edited page to
// the same bytes, which must rebuild it from the base.
#include <cstring>
#include <vector>

#include "encoders/codecs.h"
#include "tests/fuzz/encoders/fuzz_reference.h"

using namespace ferry::encoders;

namespace {

std::vector<uint8_t> make_base(size_t n) {
  std::vector<uint8_t> b(n);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b[i] = (i / 256) % 3 == 0 ? 0 : static_cast<uint8_t>(x);  // zero stretches and noise
  }
  return b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t n = 4096;
  static const std::vector<uint8_t> base = make_base(n);

  std::vector<uint8_t> out(n + 64, 0xee), ref = base;
  std::memcpy(out.data(), base.data(), n);
  const DecodeResult r = delta_decode(data, size, out.data(), n);
  const bool ref_ok = fuzz::ref_delta_decode(data, size, &ref);
  if (r.ok() != ref_ok) fuzz::fuzz_fail();
  if (r.ok() && std::memcmp(ref.data(), out.data(), n) != 0) fuzz::fuzz_fail();
  if (!r.ok() && r.offset > size) fuzz::fuzz_fail();
  for (size_t g = n; g < out.size(); ++g) {
    if (out[g] != 0xee) fuzz::fuzz_fail();
  }

  // Edit script: 3 bytes per edit (offset lo, offset hi, value).
  std::vector<uint8_t> cur = base;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    cur[(data[i] | (data[i + 1] << 8)) % n] = data[i + 2];
  }
  std::vector<uint64_t> bits(bitmap_words(n));
  std::vector<uint8_t> first, enc(2 * n);
  bool have_first = false;
  for (const KernelVariant& kv : kernel_variants()) {
    if (!kv.available) continue;
    const bool any = kv.kernels->diff_bitmap(cur.data(), base.data(), n, bits.data());
    if (any != (cur != base)) fuzz::fuzz_fail();
    const size_t len = delta_encode(cur.data(), n, bits.data(), enc.data(), enc.size());
    if (len == kTooBig) fuzz::fuzz_fail();
    std::vector<uint8_t> e(enc.begin(), enc.begin() + len);
    if (!have_first) {
      first = e;
      have_first = true;
    }
    if (e != first) fuzz::fuzz_fail();
    std::vector<uint8_t> back = base;
    if (!delta_decode(e.data(), e.size(), back.data(), n).ok()) fuzz::fuzz_fail();
    if (back != cur) fuzz::fuzz_fail();
  }
  return 0;
}
