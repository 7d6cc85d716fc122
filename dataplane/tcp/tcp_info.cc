// dataplane/tcp/tcp_info.cc — what the kernel measured about a TCP connection. Apart from
// tcp_transport.cc because glibc's <netinet/tcp.h> has an older struct tcp_info (no
// tcpi_min_rtt), and the kernel's <linux/tcp.h> clashes with it.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>

#include "dataplane/tcp/tcp_transport_internal.h"

namespace ferry::dataplane::tcp {

double min_rtt_s(int fd) noexcept {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_min_rtt) + sizeof ti.tcpi_min_rtt ||
      ti.tcpi_min_rtt == ~0u) {  // ~0 until the first sample
    return 0;
  }
  return ti.tcpi_min_rtt / 1e6;
}

}  // namespace ferry::dataplane::tcp
