// dataplane/rdma/fabric_loader.cc — libfabric loaded when an rdma link is first made, not
// linked into ferry. Debian's libfabric pulls in the psm2/InfiniPath libraries, whose load-
// time setup made every ferry process 2.6x slower on plain tcp (captured-stream push on
// loopback: 3.4 -> 1.3 GB/s), whatever transport it used. ferry calls only the five
// functions below; every other libfabric call is an inline through the objects they return.
// They are defined here (the headers declare them) and forward to the library's versions the
// headers were written for (dlvsym: the same symbol versions the linker would have chosen).
#include <dlfcn.h>
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include <cstdio>
#include <mutex>

#include "dataplane/rdma/rdma_transport.h"

namespace ferry::dataplane::rdma {
namespace {

struct Fabric {
  int (*getinfo)(uint32_t, const char*, const char*, uint64_t, const fi_info*, fi_info**) = nullptr;
  void (*freeinfo)(fi_info*) = nullptr;
  fi_info* (*dupinfo)(const fi_info*) = nullptr;
  int (*fabric)(fi_fabric_attr*, fid_fabric**, void*) = nullptr;
  const char* (*strerror)(int) = nullptr;
  std::string error;
};

template <typename F>
bool resolve(void* lib, const char* name, const char* version, F& out) {
  out = reinterpret_cast<F>(::dlvsym(lib, name, version));
  return out != nullptr;
}

const Fabric& fabric() {
  static Fabric f;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = ::dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = ::dlerror();
      f.error = std::string("cannot load libfabric (") + (why ? why : "?") +
                "): apt-get install libfabric1";
      return;
    }
    if (!resolve(lib, "fi_getinfo", "FABRIC_1.3", f.getinfo) ||
        !resolve(lib, "fi_freeinfo", "FABRIC_1.3", f.freeinfo) ||
        !resolve(lib, "fi_dupinfo", "FABRIC_1.3", f.dupinfo) ||
        !resolve(lib, "fi_fabric", "FABRIC_1.1", f.fabric) ||
        !resolve(lib, "fi_strerror", "FABRIC_1.0", f.strerror)) {
      f.error = "libfabric.so.1 lacks the functions ferry was built against (FABRIC_1.3)";
      f.getinfo = nullptr;
    }
  });
  return f;
}

}  // namespace

Status load_libfabric() {
  const Fabric& f = fabric();
  if (f.getinfo) return Status::ok();
  return Status(ErrorCode::kUnavailable, "rdma: " + f.error);
}

}  // namespace ferry::dataplane::rdma

using ferry::dataplane::rdma::fabric;

// The declarations in <rdma/fabric.h>; callers check load_libfabric() first (a call without
// the library fails like libfabric itself would: -FI_ENOSYS, nullptr).
extern "C" int fi_getinfo(uint32_t version, const char* node, const char* service, uint64_t flags,
                          const struct fi_info* hints, struct fi_info** info) {
  const auto& f = fabric();
  return f.getinfo ? f.getinfo(version, node, service, flags, hints, info) : -FI_ENOSYS;
}
extern "C" void fi_freeinfo(struct fi_info* info) {
  const auto& f = fabric();
  if (f.freeinfo) f.freeinfo(info);
}
extern "C" struct fi_info* fi_dupinfo(const struct fi_info* info) {
  const auto& f = fabric();
  return f.dupinfo ? f.dupinfo(info) : nullptr;
}
extern "C" int fi_fabric(struct fi_fabric_attr* attr, struct fid_fabric** fab, void* context) {
  const auto& f = fabric();
  return f.fabric ? f.fabric(attr, fab, context) : -FI_ENOSYS;
}
extern "C" const char* fi_strerror(int errnum) {
  const auto& f = fabric();
  return f.strerror ? f.strerror(errnum) : "libfabric not loaded";
}
