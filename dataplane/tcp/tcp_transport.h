// dataplane/tcp/tcp_transport.h — the `tcp` transport: kernel TCP, non-blocking, with
// TCP_NODELAY (frames are already batched by the pump) and large socket buffers.
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::tcp {

// address: "HOST:PORT" (IPv6 hosts in brackets).
Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings = {});
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings = {});

}  // namespace ferry::dataplane::tcp
