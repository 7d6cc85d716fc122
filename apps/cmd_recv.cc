// ferry recv — placeholder until its issue lands; it must be replaced, not shipped.
#include <cstdio>

#include "apps/commands.h"

namespace ferry::apps {

int run_recv(int, char**) {
  std::fprintf(stderr, "ferry recv: not built yet\n");
  return 2;
}

}  // namespace ferry::apps
