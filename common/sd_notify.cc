// common/sd_notify.cc — see sd_notify.h.
#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ferry {

Status sd_notify(const std::string& state) {
  const char* where = std::getenv("NOTIFY_SOCKET");
  if (!where || !*where) return Status::ok();
  const std::string path(where);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // '@' stands for the leading NUL of an abstract name (no file; the length bounds the name).
  if (path.size() >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    return error(ErrorCode::kInvalidArgument,
                 "NOTIFY_SOCKET '" + path + "' is neither an absolute path nor an @abstract name");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                               (path[0] == '@' ? 0 : 1));
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return error(ErrorCode::kIo, std::string("socket: ") + std::strerror(errno));
  ssize_t n;
  do {
    n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr), len);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(state.size())) {
    return error(ErrorCode::kIo, "cannot tell systemd " + state + " on NOTIFY_SOCKET " + path +
                                     ": " + std::strerror(err));
  }
  return Status::ok();
}

}  // namespace ferry
