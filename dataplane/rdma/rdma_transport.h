// dataplane/rdma/rdma_transport.h — the `rdma` transport: one reliable connected libfabric
// endpoint (FI_EP_MSG) per link, frames sent and received whole from registered frame pools,
// credit-based flow control so a sender never overruns the receives its peer posted, and
// completion queues polled from the data calls and progress(). On RoCE/InfiniBand it runs on
// libfabric's `verbs` provider (rdma-core); anywhere else on its `tcp` provider, which takes
// the same code path, memory registration included.
//
// Built only when Meson finds libfabric (FERRY_HAVE_RDMA); transport.cc says why otherwise.
#pragma once

#include <memory>
#include <string>

#include "dataplane/transport.h"

namespace ferry::dataplane::rdma {

// address: "HOST:PORT"; settings.fabric_provider picks the libfabric provider (empty: verbs,
// falling back to tcp with a notice when no verbs device serves HOST).
Result<std::unique_ptr<Listener>> listen(const std::string& address,
                                         const TransportSettings& settings);
Result<std::unique_ptr<Transport>> connect(const std::string& address, int timeout_ms,
                                           const TransportSettings& settings);

// Loads libfabric (once; fabric_loader.cc): ferry does not link it. Errors say how to get it.
Status load_libfabric();

// The one sentence a failed memory registration gives (provider, size, libfabric's reason,
// and the usual fix); here so that the wording can be tested without a failing NIC.
Status registration_error(const std::string& provider, size_t bytes, int fi_err);

}  // namespace ferry::dataplane::rdma
