// apps/cpu_idle.h — host CPU idle fraction between two reads of /proc/stat, for the policy
// engine's "is there CPU headroom for heavier encoding" input.
#pragma once

#include <cstdint>
#include <cstdio>

namespace ferry::apps {

class CpuIdleMeter {
 public:
  // Idle fraction (0..1) of all CPUs since the previous call; the first call returns 1.
  double sample() {
    uint64_t idle = 0, total = 0;
    if (!read(idle, total) || total <= last_total_) return 1.0;
    const double f =
        static_cast<double>(idle - last_idle_) / static_cast<double>(total - last_total_);
    const bool first = last_total_ == 0;
    last_idle_ = idle;
    last_total_ = total;
    return first ? 1.0 : f;
  }

 private:
  static bool read(uint64_t& idle, uint64_t& total) {
    FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return false;
    unsigned long long v[8] = {};
    const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                              &v[3], &v[4], &v[5], &v[6], &v[7]);
    std::fclose(f);
    if (n < 4) return false;
    idle = v[3] + (n > 4 ? v[4] : 0);  // idle + iowait
    total = 0;
    for (int i = 0; i < n; ++i) total += v[i];
    return true;
  }

  uint64_t last_idle_ = 0;
  uint64_t last_total_ = 0;
};

}  // namespace ferry::apps
