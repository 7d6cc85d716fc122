// ferry apps-guest ticker: prints `FERRY-HB <seq> <ops_total>` every 20 ms, ops_total being
// the last number the application's load generator reported (read from a file /init keeps
// up to date). The host stamps each tick on arrival, so the longest gap between ticks is the
// pause the guest saw, even when the application itself reports only once a second
// (pgbench --progress). Built static by scripts/guest/build-apps.sh.
//
//   ticker FILE [PERIOD_MS]
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static unsigned long long read_total(const char* path, unsigned long long last) {
  FILE* f = fopen(path, "r");
  if (!f) return last;
  unsigned long long v;
  if (fscanf(f, "%llu", &v) == 1 && v > last) last = v;  // never backwards (a torn write)
  fclose(f);
  return last;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: ticker FILE [PERIOD_MS]\n");
    return 2;
  }
  const long period_ms = argc > 2 ? atol(argv[2]) : 20;
  const long long period_ns = (period_ms > 0 ? period_ms : 20) * 1000000LL;
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  unsigned long long seq = 0, total = 0;
  for (;;) {
    total = read_total(argv[1], total);
    printf("FERRY-HB %llu %llu\n", seq++, total);
    next.tv_nsec += period_ns;
    while (next.tv_nsec >= 1000000000L) {
      next.tv_nsec -= 1000000000L;
      next.tv_sec++;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    // After a pause (migration) do not burst to catch up: the next tick is one period away.
    if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec)) {
      next = now;
      continue;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
}
