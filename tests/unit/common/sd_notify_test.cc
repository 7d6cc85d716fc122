// Unit tests of common/sd_notify.h against a real AF_UNIX datagram socket standing in for
// systemd: a path, an abstract name, no variable, and a socket nobody listens on.
#include "common/sd_notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ferry {
namespace {

// A datagram socket bound at name ('@' = abstract), as systemd makes one.
class FakeSystemd {
 public:
  explicit FakeSystemd(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') addr.sun_path[0] = '\0';
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() +
                                           (name[0] == '@' ? 0 : 1));
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0;
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }
  ~FakeSystemd() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }
  bool bound() const { return bound_; }
  // The next datagram (waits at most 5 s).
  std::string next() {
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[256];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(SdNotify, UnsetSendsNothing) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(sd_notify("READY=1"));
  ::setenv("NOTIFY_SOCKET", "", 1);
  EXPECT_TRUE(sd_notify("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
}

TEST(SdNotify, PathSocket) {
  const std::string path = "/tmp/ferry-sd-notify-test-" + std::to_string(::getpid());
  FakeSystemd sd(path);
  ASSERT_TRUE(sd.bound());
  ASSERT_TRUE(sd_notify("READY=1"));
  EXPECT_EQ(sd.next(), "READY=1");
  ASSERT_TRUE(sd_notify("STOPPING=1"));
  EXPECT_EQ(sd.next(), "STOPPING=1");
}

TEST(SdNotify, AbstractSocket) {
  FakeSystemd sd("@ferry-sd-notify-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(sd.bound());
  ASSERT_TRUE(sd_notify("READY=1"));
  EXPECT_EQ(sd.next(), "READY=1");
}

TEST(SdNotify, ErrorsNameTheSocket) {
  const std::string path = "/tmp/ferry-sd-notify-nobody-" + std::to_string(::getpid());
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  auto st = sd_notify("READY=1");
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  EXPECT_FALSE(sd_notify("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
}

}  // namespace
}  // namespace ferry
