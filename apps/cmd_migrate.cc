// ferry migrate — placeholder until its issue lands; it must be replaced, not shipped.
#include <cstdio>

#include "apps/commands.h"

namespace ferry::apps {

int run_migrate(int, char**) {
  std::fprintf(stderr, "ferry migrate: not built yet\n");
  return 2;
}

}  // namespace ferry::apps
