// ferry guest workload: allocates a working set, makes it real memory, then dirties it at a
// configurable rate with a configurable write pattern, printing heartbeats to the console.
//
// Built static by scripts/guest/build.sh (gcc -static -O2) and started by the initramfs /init,
// which maps kernel cmdline parameters (ferry.ws=64M ferry.rate=5000 ...) to these options:
//
//   --ws SIZE         working set (K/M/G suffixes), default 64M
//   --rate N          pages dirtied per second; 0 or "unlimited" = as fast as possible
//   --pattern P       word | random | text | sparse | structured | mix | idle
//   --mode M          page order: uniform (random pages), seq (sweep), hot (90% of writes
//                     hit the first 10% of the set)
//   --seed N          PRNG seed (default 1)
//   --hb-ms N         heartbeat (tick) period in ms (default 20: the host stamps each tick on
//                     arrival, and the longest gap between ticks is the pause the guest saw)
//
// Console protocol (one line each, read by tests/integration/rig.py):
//   FERRY-READY ws=<bytes> pages=<n> pattern=<p> mode=<m> rate=<n> fill_ms=<ms>
//   FERRY-HB <seq> <pages_written_total>
//   FERRY-CHECK OK <pages>                         answer to CHECK: every page verified
//   FERRY-CHECK BAD <first_bad_page> bad=<n> pages=<pages>
//   FERRY-CORRUPTED <page>                         answer to CORRUPT <page>
//
// Commands, one line each on the console's input (the rig writes them to the serial chardev;
// read at each tick, so within ~20 ms):
//   CHECK          verify every page of the working set against its checksum (ticks go on
//                  during the check)
//   CORRUPT <n>    flip one byte of page n without updating its checksum (for the test that
//                  the check catches a bad page)
//
// Self-check: every page has a checksum (sums[], in guest memory too) kept in step with every
// write: full rewrites recompute it, word and record updates adjust it incrementally. A page
// whose content does not match its checksum was lost or damaged in transit (post-copy runs
// cannot compare RAM dumps: the destination runs while pages still arrive).
//
// Pages are meant to look like real memory: every page differs (a page index or a random
// stream is always mixed in), so there is no single repeated pattern a codec could learn.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { kPage = 4096 };

enum Pattern { P_WORD, P_RANDOM, P_TEXT, P_SPARSE, P_STRUCTURED, P_MIX, P_IDLE };
static const char* const kPatternNames[] = {"word",       "random", "text", "sparse",
                                            "structured", "mix",    "idle"};
enum Mode { M_UNIFORM, M_SEQ, M_HOT };
static const char* const kModeNames[] = {"uniform", "seq", "hot"};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static inline uint64_t rnd(void) {
  // xorshift64*: fast and good enough for page contents.
  uint64_t x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Per-page checksums: sum over the page's words of term(word, index). term is a bijection of
// the word for each index, so changing any one word changes the sum; a word write adjusts the
// sum by the difference of two terms.
static uint64_t* sums;

static inline uint64_t term(uint64_t w, uint64_t i) {
  uint64_t x = (w ^ (i * 0x9E3779B97F4A7C15ull)) * 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 31);
}

static uint64_t page_sum(const uint8_t* p) {
  const uint64_t* w = (const uint64_t*)p;
  uint64_t s = 0;
  for (uint64_t i = 0; i < kPage / 8; i++) s += term(w[i], i);
  return s;
}

// The sum of the terms of words [first, first + n) of a page.
static uint64_t words_sum(const uint8_t* p, uint64_t first, uint64_t n) {
  const uint64_t* w = (const uint64_t*)p;
  uint64_t s = 0;
  for (uint64_t i = first; i < first + n; i++) s += term(w[i], i);
  return s;
}

// A small dictionary: text pages are low-entropy but not repetitive.
static const char* const kWords[] = {
    "the",     "migration", "page",    "memory",  "kernel",  "of",      "and",     "to",
    "in",      "is",        "buffer",  "for",     "that",    "with",    "device",  "queue",
    "request", "network",   "virtual", "machine", "dirty",   "bitmap",  "stream",  "section",
    "error",   "return",    "value",   "struct",  "static",  "const",   "int",     "char",
    "data",    "file",      "open",    "read",    "write",   "close",   "server",  "client",
    "user",    "session",   "token",   "GET",     "POST",    "HTTP/1.1", "200",    "OK",
    "Content-Type:", "application/json", "{\"id\":", "\"name\":", "\"value\":", "true",
    "false",   "null",      "info",    "warn",    "debug",   "timestamp", "2026-11-24", "host",
};
enum { kNumWords = sizeof(kWords) / sizeof(kWords[0]) };

static void fill_random(uint8_t* p) {
  uint64_t* w = (uint64_t*)p;
  for (int i = 0; i < kPage / 8; i++) w[i] = rnd();
}

static void fill_text(uint8_t* p, uint64_t page) {
  int pos = 0;
  // A log-line prefix carrying the page number and a sequence keeps pages distinct.
  pos += snprintf((char*)p, kPage, "[%08llx] ", (unsigned long long)page);
  while (pos < kPage - 1) {
    uint64_t r = rnd();
    const char* word = kWords[r % kNumWords];
    size_t n = strlen(word);
    if (pos + (int)n + 1 >= kPage) break;
    memcpy(p + pos, word, n);
    pos += (int)n;
    p[pos++] = ((r >> 32) % 11 == 0) ? '\n' : ' ';
  }
  while (pos < kPage) p[pos++] = ' ';
}

static void fill_sparse(uint8_t* p, uint64_t page) {
  memset(p, 0, kPage);
  // About two thirds of sparse pages stay entirely zero (still touched, so real memory).
  if (mix64(page ^ rng_state) % 3 != 0) return;
  int n = 1 + (int)(rnd() % 8);
  for (int i = 0; i < n; i++) {
    uint64_t r = rnd();
    p[r % kPage] = (uint8_t)((r >> 16) | 1);
  }
}

// struct-array-like records: ids, counters, kernel-looking pointers, flags, short names.
struct Record {
  uint64_t id;
  uint64_t counter;
  uint64_t next;   // pointer-like
  uint64_t owner;  // pointer-like
  uint32_t flags;
  uint32_t len;
  char name[12];
  uint32_t crc;
  double value;
};
_Static_assert(sizeof(struct Record) == 64, "record size");

static void fill_structured(uint8_t* p, uint64_t page) {
  struct Record* r = (struct Record*)p;
  uint64_t base = 0xffff888000000000ull + (page << 12);
  for (int i = 0; i < kPage / (int)sizeof(struct Record); i++) {
    uint64_t x = rnd();
    r[i].id = page * 64 + (uint64_t)i;
    r[i].counter = x % 1000;
    r[i].next = base + (uint64_t)((i + 1) % 64) * 64;
    r[i].owner = (x & 1) ? 0 : 0xffff888000000000ull + ((x >> 8) & 0xfffffc0ull);
    r[i].flags = (uint32_t)(x >> 40) & 0x13;
    r[i].len = (uint32_t)(x >> 20) % 512;
    snprintf(r[i].name, sizeof(r[i].name), "obj%llu", (unsigned long long)(r[i].id % 100000));
    r[i].crc = 0;
    r[i].value = (double)(x % 100000) / 7.0;
  }
}

static enum Pattern page_pattern(enum Pattern p, uint64_t page) {
  if (p != P_MIX && p != P_IDLE) return p;
  return (enum Pattern)(mix64(page) % 5);  // word..structured
}

static void fill_page(uint8_t* p, enum Pattern pat, uint64_t page) {
  switch (page_pattern(pat, page)) {
    case P_WORD:  // word pages start as "ordinary" data: half random, half small integers
    {
      uint64_t* w = (uint64_t*)p;
      for (int i = 0; i < kPage / 8; i++) w[i] = (i & 1) ? rnd() : (page << 9) + (uint64_t)i;
      break;
    }
    case P_RANDOM: fill_random(p); break;
    case P_TEXT: fill_text(p, page); break;
    case P_SPARSE: fill_sparse(p, page); break;
    case P_STRUCTURED: fill_structured(p, page); break;
    default: fill_random(p); break;
  }
}

static void dirty_page(uint8_t* p, enum Pattern pat, uint64_t page, uint64_t seq) {
  switch (page_pattern(pat, page)) {
    case P_WORD: {
      uint64_t r = rnd();
      uint64_t k = r % (kPage / 8);
      uint64_t* w = (uint64_t*)p;
      uint64_t old = w[k];
      w[k] = seq ^ (r << 20);
      sums[page] += term(w[k], k) - term(old, k);
      return;
    }
    case P_RANDOM: fill_random(p); break;
    case P_TEXT: fill_text(p, page ^ (seq << 24)); break;
    case P_SPARSE: fill_sparse(p, page + seq); break;
    case P_STRUCTURED: {
      // Update a few records in place, as a program mutating objects would.
      struct Record* r = (struct Record*)p;
      const uint64_t rw = sizeof(struct Record) / 8;  // words per record
      int n = 1 + (int)(rnd() % 4);
      for (int i = 0; i < n; i++) {
        uint64_t x = rnd();
        uint64_t j = x % (kPage / sizeof(struct Record));
        struct Record* rec = &r[j];
        uint64_t before = words_sum(p, j * rw, rw);
        rec->counter++;
        rec->value += 1.5;
        rec->flags ^= (uint32_t)(x >> 60);
        rec->crc = (uint32_t)mix64(rec->counter ^ rec->id);
        sums[page] += words_sum(p, j * rw, rw) - before;
      }
      return;
    }
    default: fill_random(p); break;
  }
  sums[page] = page_sum(p);  // a full rewrite
}

// ---- ticks and console commands ----

static uint64_t hb_ns;
static uint64_t hb_seq;
static uint64_t next_hb;
static uint64_t written;
static uint8_t* mem;
static uint64_t pages;
static int check_requested;
static char cmd_buf[256];
static size_t cmd_len;

static void run_command(const char* line) {
  if (strcmp(line, "CHECK") == 0) {
    check_requested = 1;
  } else if (strncmp(line, "CORRUPT ", 8) == 0) {
    uint64_t page = strtoull(line + 8, NULL, 0);
    if (page < pages) {
      mem[page * kPage + 100] ^= 0x5a;  // the checksum is deliberately left as it was
      printf("FERRY-CORRUPTED %llu\n", (unsigned long long)page);
    } else {
      printf("FERRY-ERROR CORRUPT page %llu out of range\n", (unsigned long long)page);
    }
  }
}

// Reads whatever the host wrote to the console (never blocks) and runs complete lines.
static void poll_commands(void) {
  struct pollfd pfd = {0, POLLIN, 0};
  while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
    char buf[128];
    ssize_t n = read(0, buf, sizeof(buf));
    if (n <= 0) return;
    for (ssize_t i = 0; i < n; i++) {
      char c = buf[i];
      if (c == '\n' || c == '\r') {
        cmd_buf[cmd_len] = 0;
        if (cmd_len) run_command(cmd_buf);
        cmd_len = 0;
      } else if (cmd_len + 1 < sizeof(cmd_buf)) {
        cmd_buf[cmd_len++] = c;
      }
    }
  }
}

// Prints a tick when one is due (and then reads commands).
static void maybe_tick(uint64_t t) {
  if (t < next_hb) return;
  printf("FERRY-HB %llu %llu\n", (unsigned long long)hb_seq++, (unsigned long long)written);
  next_hb += hb_ns;
  if (next_hb <= t) next_hb = t + hb_ns;  // after a pause (migration) do not burst
  poll_commands();
}

static void self_check(void) {
  uint64_t bad = 0, first = 0;
  for (uint64_t i = 0; i < pages; i++) {
    if (page_sum(mem + i * kPage) != sums[i]) {
      if (bad++ == 0) first = i;
    }
    if ((i & 255) == 255) maybe_tick(now_ns());  // keep ticking through a long check
  }
  if (bad == 0)
    printf("FERRY-CHECK OK %llu\n", (unsigned long long)pages);
  else
    printf("FERRY-CHECK BAD %llu bad=%llu pages=%llu\n", (unsigned long long)first,
           (unsigned long long)bad, (unsigned long long)pages);
}

static uint64_t parse_size(const char* s) {
  char* end;
  uint64_t v = strtoull(s, &end, 0);
  switch (*end) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    default: break;
  }
  return v;
}

static int lookup(const char* s, const char* const* names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

int main(int argc, char** argv) {
  uint64_t ws = 64ull << 20;
  uint64_t rate = 0;
  enum Pattern pat = P_MIX;
  enum Mode mode = M_UNIFORM;
  uint64_t seed = 1;
  uint64_t hb_ms = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char* k = argv[i];
    const char* v = argv[i + 1];
    if (strcmp(k, "--ws") == 0) {
      ws = parse_size(v);
    } else if (strcmp(k, "--rate") == 0) {
      rate = (strcmp(v, "unlimited") == 0) ? 0 : strtoull(v, NULL, 0);
    } else if (strcmp(k, "--pattern") == 0) {
      int p = lookup(v, kPatternNames, P_IDLE + 1);
      if (p < 0) {
        printf("FERRY-ERROR unknown pattern %s\n", v);
        return 2;
      }
      pat = (enum Pattern)p;
    } else if (strcmp(k, "--mode") == 0) {
      int m = lookup(v, kModeNames, M_HOT + 1);
      if (m < 0) {
        printf("FERRY-ERROR unknown mode %s\n", v);
        return 2;
      }
      mode = (enum Mode)m;
    } else if (strcmp(k, "--seed") == 0) {
      seed = strtoull(v, NULL, 0);
    } else if (strcmp(k, "--hb-ms") == 0) {
      hb_ms = strtoull(v, NULL, 0);
      if (hb_ms == 0) hb_ms = 20;
    } else {
      printf("FERRY-ERROR unknown option %s\n", k);
      return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  rng_state = mix64(seed) | 1;
  // Commands come in on the console: no echo (it would interleave with the ticks).
  struct termios tio;
  if (tcgetattr(0, &tio) == 0) {
    tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    tcsetattr(0, TCSANOW, &tio);
  }

  pages = ws / kPage;
  if (pages == 0) pages = 1;
  mem = mmap(NULL, pages * kPage, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (mem == MAP_FAILED) {
    printf("FERRY-ERROR mmap %llu bytes: %s\n", (unsigned long long)(pages * kPage),
           strerror(errno));
    return 1;
  }
  sums = mmap(NULL, pages * sizeof(uint64_t), PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (sums == MAP_FAILED) {
    printf("FERRY-ERROR mmap checksums: %s\n", strerror(errno));
    return 1;
  }
  uint64_t t0 = now_ns();
  for (uint64_t i = 0; i < pages; i++) {
    fill_page(mem + i * kPage, pat, i);
    sums[i] = page_sum(mem + i * kPage);
  }
  uint64_t t1 = now_ns();
  printf("FERRY-READY ws=%llu pages=%llu pattern=%s mode=%s rate=%llu fill_ms=%llu\n",
         (unsigned long long)(pages * kPage), (unsigned long long)pages, kPatternNames[pat],
         kModeNames[mode], (unsigned long long)rate, (unsigned long long)((t1 - t0) / 1000000));

  hb_ns = hb_ms * 1000000ull;
  next_hb = now_ns() + hb_ns;
  uint64_t start = now_ns();
  uint64_t cursor = 0;
  const uint64_t hot_pages = pages / 10 ? pages / 10 : 1;

  for (;;) {
    uint64_t t = now_ns();
    maybe_tick(t);
    if (check_requested) {
      check_requested = 0;
      self_check();
      continue;
    }
    if (pat == P_IDLE) {
      uint64_t wait = next_hb > t ? next_hb - t : 0;
      struct timespec ts = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
      nanosleep(&ts, NULL);
      continue;
    }
    uint64_t batch = 16;
    if (rate != 0) {
      // Pages allowed so far by the rate; sleep until the next one is due.
      uint64_t allowed = (t - start) / 1000 * rate / 1000000;
      if (written >= allowed) {
        uint64_t due = start + (written + 1) * 1000000000ull / rate;
        if (due > next_hb) due = next_hb;
        if (due > t) {
          uint64_t wait = due - t;
          struct timespec ts = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
          nanosleep(&ts, NULL);
        }
        continue;
      }
      if (allowed - written < batch) batch = allowed - written;
      // After a long stop (paused VM), do not try to catch up with a burst.
      if (allowed - written > rate) start = t - written * 1000000000ull / rate;
    }
    for (uint64_t i = 0; i < batch; i++) {
      uint64_t page;
      switch (mode) {
        case M_SEQ: page = cursor++ % pages; break;
        case M_HOT: {
          uint64_t r = rnd();
          page = (r % 10 != 0) ? (r >> 8) % hot_pages : (r >> 8) % pages;
          break;
        }
        default: page = rnd() % pages; break;
      }
      dirty_page(mem + page * kPage, pat, page, written);
      written++;
    }
  }
}
