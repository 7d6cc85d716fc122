// dataplane/loopback/loopback_transport.h — the `loopback` transport: two ends in one
// process joined by in-process frame rings (common/spsc_ring.h), for unit tests of everything above
// the transport (the pump, the wire protocol) without sockets. "loopback:NAME" names a listener
// inside this process; connect("NAME") pairs with it.
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::loopback {

// Frames in flight per direction and buffers per end; small enough that tests exercise
// back-pressure.
inline constexpr size_t kRingFrames = 16;
inline constexpr size_t kPoolFrames = 32;

Result<std::unique_ptr<Listener>> listen(const std::string& name);
Result<std::unique_ptr<Transport>> connect(const std::string& name, int timeout_ms);

}  // namespace ferry::dataplane::loopback
