// dataplane/loopback/loopback_transport.h — the `loopback` transport: two ends in one
// process joined by in-process byte rings, for unit tests of everything above the transport
// (the pump, the wire protocol) without sockets. "loopback:NAME" names a listener inside this
// process; connect("NAME") pairs with it.
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::loopback {

// Ring capacity per direction; small enough that tests exercise back-pressure.
inline constexpr size_t kRingBytes = 256u << 10;

Result<std::unique_ptr<Listener>> listen(const std::string& name);
Result<std::unique_ptr<Transport>> connect(const std::string& name, int timeout_ms);

}  // namespace ferry::dataplane::loopback
