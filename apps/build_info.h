// apps/build_info.h — `ferry --version`: version, kernels and transports in this build.
#pragma once

#include <cstdio>

namespace ferry::apps {
void print_build_info(FILE* out);
}  // namespace ferry::apps
