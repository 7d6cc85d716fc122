// Fuzzing of the JSON parser (common/json.h) and of the QMP client's message handling
// (qemu-channel/qmp_client.h) with the bytes a hostile or broken QMP server may send.
// Input: mode:u8 bytes[]. Even mode: json::parse(bytes); a value that parses must dump to JSON
// that parses back to an equal value and dumps the same again (differential against itself).
// Odd mode: bytes are everything the server sends (a socketpair, then EOF): the client runs
// its handshake (greeting, qmp_capabilities), two commands, a poll and an event wait, all with
// a zero deadline. Must never crash, hang, or queue more than kMaxQueuedEvents events.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string_view>

#include "common/json.h"
#include "qemu-channel/qmp_client.h"

using ferry::json::Value;
using ferry::qemu::QmpClient;

namespace {

void check_round_trip(std::string_view text) {
  auto v = ferry::json::parse(text);
  if (!v) {
    if (v.status().message().empty()) __builtin_trap();
    return;
  }
  const std::string once = v->dump();
  auto again = ferry::json::parse(once);
  if (!again) __builtin_trap();
  if (!(*again == *v)) __builtin_trap();
  if (again->dump() != once) __builtin_trap();
}

bool is_migration_active(const Value& data) { return data["status"].as_string() == "active"; }

void run_qmp_session(const uint8_t* data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  // The server's whole output is queued before the client starts (no thread needed): what
  // does not fit the socket buffer is dropped, then EOF.
  size_t off = 0;
  while (off < size) {
    ssize_t n = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  shutdown(sv[1], SHUT_WR);
  auto client = QmpClient::connect_fd(sv[0], "fuzz", 0);  // owns sv[0] from here
  if (client) {
    QmpClient& c = **client;
    (void)c.qemu_version();
    (void)c.execute("query-migrate", {}, 0);
    (void)c.execute("migrate-set-capabilities", Value::object({{"capabilities", Value::array({})}}),
                    0);
    (void)c.poll(0);
    (void)c.wait_event("MIGRATION", 0, is_migration_active);
    if (c.queued_events() > QmpClient::kMaxQueuedEvents) __builtin_trap();
    while (auto ev = c.pop_event()) (void)ev->data.dump();
  } else if (client.status().message().empty()) {
    __builtin_trap();
  }
  close(sv[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode % 2 == 0) {
    check_round_trip(rest);
  } else {
    run_qmp_session(data + 1, size - 1);
  }
  return 0;
}
