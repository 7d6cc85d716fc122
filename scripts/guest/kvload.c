// kvload: a write-heavy load generator for redis-server in the ferry "apps" guest.
//
//   kvload SOCKET KEYS
//
// Speaks RESP over the unix socket, 32 commands per pipelined batch: 3 of 4 are SET of a
// JSON-like record (200-1800 bytes: ids, timestamps, words, numbers and a base64 blob, so the
// values compress like real application data rather than like a repeated byte) under
// "user:<n>" with n uniform in [0, KEYS), 1 of 4 a GET of such a key. Prints the number of
// completed commands, one line every 200 ms, for /init to turn into heartbeats.
// redis-benchmark is not used because its values are one repeated byte.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { kBatch = 32, kMaxValue = 2048 };

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1Dull;
}

static const char* const kWords[] = {
    "alpha",  "order",   "shipped", "pending", "berlin", "paris",  "tokyo",   "premium",
    "basic",  "refund",  "cart",    "mobile",  "web",    "search", "checkout", "coupon",
    "retry",  "timeout", "success", "session", "admin",  "guest",  "blue",    "green",
};
enum { kNumWords = sizeof(kWords) / sizeof(kWords[0]) };

static size_t make_value(char* out, uint64_t key) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n = (size_t)snprintf(out, kMaxValue,
                              "{\"id\":%llu,\"ts\":%llu,\"score\":%.4f,\"city\":\"%s\","
                              "\"plan\":\"%s\",\"tags\":[\"%s\",\"%s\"],\"blob\":\"",
                              (unsigned long long)key, (unsigned long long)(1764000000 + rnd() % 10000000),
                              (double)(rnd() % 1000000) / 1000.0, kWords[rnd() % kNumWords],
                              kWords[rnd() % kNumWords], kWords[rnd() % kNumWords],
                              kWords[rnd() % kNumWords]);
  size_t blob = 100 + rnd() % 1500;
  for (size_t i = 0; i < blob && n < kMaxValue - 4; i++) out[n++] = b64[rnd() % 64];
  memcpy(out + n, "\"}", 2);
  return n + 2;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

// Reads until `replies` complete RESP replies (+OK, $-1, $<n> + payload) were consumed.
static int read_replies(int fd, int replies) {
  static char buf[1 << 16];
  static size_t have = 0;
  while (replies > 0) {
    size_t pos = 0;
    while (replies > 0) {
      char* eol = memmem(buf + pos, have - pos, "\r\n", 2);
      if (eol == NULL) break;
      size_t line_end = (size_t)(eol - buf) + 2;
      if (buf[pos] == '$') {
        long len = strtol(buf + pos + 1, NULL, 10);
        size_t end = len < 0 ? line_end : line_end + (size_t)len + 2;
        if (end > have) break;
        pos = end;
      } else if (buf[pos] == '-') {
        fprintf(stderr, "kvload: redis error: %.*s\n", (int)(line_end - pos), buf + pos);
        return -1;
      } else {
        pos = line_end;
      }
      replies--;
    }
    memmove(buf, buf + pos, have - pos);
    have -= pos;
    if (replies == 0) break;
    if (have == sizeof(buf)) return -1;
    ssize_t r = read(fd, buf + have, sizeof(buf) - have);
    if (r <= 0) return -1;
    have += (size_t)r;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: kvload SOCKET KEYS\n");
    return 2;
  }
  uint64_t keys = strtoull(argv[2], NULL, 10);
  if (keys == 0) keys = 1;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", argv[1]);
  if (fd < 0 || connect(fd, (struct sockaddr*)&addr, sizeof(addr)) != 0) {
    perror("kvload: connect");
    return 1;
  }
  static char out[kBatch * (kMaxValue + 128)];
  char value[kMaxValue];
  unsigned long long done = 0;
  double next_report = now_s() + 0.2;
  for (;;) {
    size_t n = 0;
    for (int i = 0; i < kBatch; i++) {
      char key[32];
      uint64_t k = rnd() % keys;
      int klen = snprintf(key, sizeof(key), "user:%llu", (unsigned long long)k);
      if (rnd() % 4 != 0) {
        size_t vlen = make_value(value, k);
        n += (size_t)sprintf(out + n, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n", klen, key, vlen);
        memcpy(out + n, value, vlen);
        n += vlen;
        memcpy(out + n, "\r\n", 2);
        n += 2;
      } else {
        n += (size_t)sprintf(out + n, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key);
      }
    }
    if (write_all(fd, out, n) != 0 || read_replies(fd, kBatch) != 0) {
      fprintf(stderr, "kvload: connection to redis lost\n");
      return 1;
    }
    done += kBatch;
    double t = now_s();
    if (t >= next_report) {
      printf("%llu\n", done);
      fflush(stdout);
      next_report = t + 0.2;
    }
  }
}
