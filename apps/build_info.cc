#include "apps/build_info.h"

#include "common/cpu_features.h"

namespace ferry::apps {

void print_build_info(FILE* out) {
  const auto& cpu = cpu_features();
  std::fprintf(out, "ferry %s\n", FERRY_VERSION);
  std::fprintf(out, "cpu: avx2=%s avx512bw=%s\n", cpu.avx2 ? "yes" : "no",
               cpu.avx512bw ? "yes" : "no");
}

}  // namespace ferry::apps
