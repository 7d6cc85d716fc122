// dataplane/dpdk/dpdk_settings.cc — see dpdk_settings.h.
#include "dataplane/dpdk/dpdk_settings.h"

#include <cstdlib>
#include <mutex>

namespace ferry::dataplane::dpdk {
namespace {

std::mutex g_mu;
DpdkSettings g_settings;

std::string from_env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

void configure(const DpdkSettings& settings) {
  std::lock_guard lk(g_mu);
  g_settings = settings;
}

DpdkSettings settings() {
  DpdkSettings s;
  {
    std::lock_guard lk(g_mu);
    s = g_settings;
  }
  if (s.eal_args.empty()) s.eal_args = from_env(kEalArgsEnv);
  if (s.local_ip.empty()) s.local_ip = from_env(kLocalIpEnv);
  return s;
}

}  // namespace ferry::dataplane::dpdk
