// common/sd_notify.h — systemd's readiness protocol without libsystemd: a service started
// with Type=notify finds an AF_UNIX datagram socket in $NOTIFY_SOCKET (a path, or an abstract
// name written with a leading '@') and sends it "READY=1" once it serves, "STOPPING=1" when it
// begins to stop. Outside systemd the variable is unset and nothing is sent.
#pragma once

#include <string>

#include "common/status.h"

namespace ferry {

// Sends state (e.g. "READY=1", "STOPPING=1", "STATUS=...") as one datagram to
// $NOTIFY_SOCKET. Ok when the variable is unset or empty (not under systemd); an error (one
// sentence naming the socket) when it is set but the datagram could not be sent. Blocks at
// most briefly (a datagram socket; systemd reads it at once). Any thread.
Status sd_notify(const std::string& state);

}  // namespace ferry
