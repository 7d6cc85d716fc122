// apps/libvirt_source.cc — ferry migrate --libvirt: the migration of a libvirt domain through
// the libvirt API, with ferry's socket as the migration URI (peer-to-peer: the source libvirtd
// talks to the destination's, which starts the destination QEMU listening on the same path,
// where ferry recv delivers). Built only when Meson finds libvirt (libvirt-dev).
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "apps/migration_source.h"

namespace ferry::apps {
namespace {

std::string last_error() {
  const char* m = virGetLastErrorMessage();
  return m ? m : "unknown libvirt error";
}

uint64_t param_ull(virTypedParameterPtr params, int n, const char* name) {
  unsigned long long v = 0;
  return virTypedParamsGetULLong(params, n, name, &v) == 1 ? v : 0;
}

class LibvirtSource : public MigrationSource {
 public:
  LibvirtSource(virConnectPtr conn, virDomainPtr dom, const LibvirtTarget& t)
      : conn_(conn), dom_(dom), target_(t) {}

  ~LibvirtSource() override {
    if (thread_.joinable()) thread_.join();
    virDomainFree(dom_);
    virConnectClose(conn_);
  }

  Status start() {
    // virDomainMigrateToURI3 blocks until the migration ends: its own thread, and its own
    // connection, so that the policy loop's calls never wait behind it.
    virConnectPtr mconn =
        virConnectOpen(target_.connect_uri.empty() ? nullptr : target_.connect_uri.c_str());
    if (!mconn) return error(ErrorCode::kUnavailable, "libvirt: " + last_error());
    virDomainPtr mdom = virDomainLookupByName(mconn, target_.domain.c_str());
    if (!mdom) {
      std::string e = last_error();
      virConnectClose(mconn);
      return error(ErrorCode::kInvalidArgument, "libvirt domain " + target_.domain + ": " + e);
    }
    unsigned int flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER;
    if (target_.postcopy) flags |= VIR_MIGRATE_POSTCOPY;
    if (target_.auto_converge) flags |= VIR_MIGRATE_AUTO_CONVERGE;
    thread_ = std::thread([this, mconn, mdom, flags] {
      virTypedParameterPtr params = nullptr;
      int n = 0, max = 0;
      virTypedParamsAddString(&params, &n, &max, VIR_MIGRATE_PARAM_URI,
                              target_.migrate_uri.c_str());
      // ferry's back-pressure makes QEMU see the link's real rate; libvirt's cap would only
      // get in the way (MiB/s).
      virTypedParamsAddULLong(&params, &n, &max, VIR_MIGRATE_PARAM_BANDWIDTH, 1ULL << 20);
      const int rc = virDomainMigrateToURI3(mdom, target_.dest_uri.c_str(), params,
                                            static_cast<unsigned>(n), flags);
      std::string e = rc < 0 ? last_error() : "";
      virTypedParamsFree(params, n);
      virDomainFree(mdom);
      virConnectClose(mconn);
      std::lock_guard<std::mutex> lock(mu_);
      result_error_ = e;
      done_ = true;
    });
    return Status::ok();
  }

  Result<policy::QemuSample> sample(std::string& err) override {
    if (finished(err)) return last_;
    int type = VIR_DOMAIN_JOB_NONE;
    virTypedParameterPtr params = nullptr;
    int n = 0;
    if (virDomainGetJobStats(dom_, &type, &params, &n, 0) < 0) {
      // The domain is gone from the source the moment the migration completed.
      const std::string e = last_error();
      for (int i = 0; i < 50 && !finished(err); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (finished(err)) return last_;
      return error(ErrorCode::kIo, "libvirt job stats: " + e);
    }
    policy::QemuSample s = fill(params, n);
    virTypedParamsFree(params, n);
    int state = 0, reason = 0;
    s.status = type == VIR_DOMAIN_JOB_NONE ? "setup" : "active";
    if (virDomainGetState(dom_, &state, &reason, 0) == 0 && state == VIR_DOMAIN_PAUSED) {
      if (reason == VIR_DOMAIN_PAUSED_POSTCOPY) s.status = "postcopy-active";
      if (reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED) s.status = "postcopy-paused";
    }
    if (s.status == "active" && postcopy_started_) s.status = "postcopy-active";
    // In post-copy libvirt's downtime runs from the source's stop to the end of post-copy,
    // while the guest already runs on the destination: not the pause. Left unknown (0).
    if (s.status.rfind("postcopy", 0) == 0) postcopy_seen_ = true;
    if (postcopy_seen_) s.downtime_ms = 0;
    last_ = s;
    return s;
  }

  // Whether virDomainMigrateToURI3 returned; then last_ holds the outcome.
  bool finished(std::string& err) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_) return false;
    last_.status = !result_error_.empty() ? (cancelled_ ? "cancelled" : "failed") : "completed";
    err = result_error_;
    if (result_error_.empty()) final_stats();
    return true;
  }

  Status set_max_bandwidth(int64_t bytes_per_s) override {
    const unsigned long mib = static_cast<unsigned long>((bytes_per_s + (1 << 20) - 1) >> 20);
    if (virDomainMigrateSetMaxSpeed(dom_, mib > 0 ? mib : 1, 0) < 0) {
      return error(ErrorCode::kIo, last_error());
    }
    return Status::ok();
  }
  Status set_downtime_limit(int64_t ms) override {
    if (virDomainMigrateSetMaxDowntime(dom_, static_cast<unsigned long long>(ms), 0) < 0) {
      return error(ErrorCode::kIo, last_error());
    }
    return Status::ok();
  }
  Status start_postcopy() override {
    if (virDomainMigrateStartPostCopy(dom_, 0) < 0) return error(ErrorCode::kIo, last_error());
    postcopy_started_ = true;
    return Status::ok();
  }
  void cancel() override {
    cancelled_ = true;
    (void)virDomainAbortJob(dom_);
  }

 private:
  static policy::QemuSample fill(virTypedParameterPtr params, int n) {
    policy::QemuSample s;
    s.transferred_bytes = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED);
    s.remaining_bytes = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_REMAINING);
    s.total_bytes = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_TOTAL);
    s.dirty_pages_per_s =
        static_cast<double>(param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE));
    const uint64_t page = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE);
    s.page_size_bytes = page ? page : 4096;
    s.dirty_sync_count = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_ITERATION);
    s.total_time_ms = param_ull(params, n, VIR_DOMAIN_JOB_TIME_ELAPSED);
    s.downtime_ms = param_ull(params, n, VIR_DOMAIN_JOB_DOWNTIME);
    s.postcopy_requests = param_ull(params, n, VIR_DOMAIN_JOB_MEMORY_POSTCOPY_REQS);
    return s;
  }

  // A completed migration's statistics (downtime, total time) from the destination libvirtd,
  // which keeps them (the source's transient domain is gone). Best effort, once.
  void final_stats() {
    if (final_done_) return;
    final_done_ = true;
    virConnectPtr dconn = virConnectOpen(target_.dest_uri.c_str());
    if (!dconn) return;
    if (virDomainPtr d = virDomainLookupByName(dconn, target_.domain.c_str())) {
      int type = 0;
      virTypedParameterPtr params = nullptr;
      int n = 0;
      if (virDomainGetJobStats(d, &type, &params, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) == 0 &&
          type == VIR_DOMAIN_JOB_COMPLETED) {
        policy::QemuSample s = fill(params, n);
        if (!postcopy_seen_) last_.downtime_ms = s.downtime_ms;
        if (s.total_time_ms) last_.total_time_ms = s.total_time_ms;
        if (s.dirty_sync_count) last_.dirty_sync_count = s.dirty_sync_count;
        if (s.transferred_bytes) last_.transferred_bytes = s.transferred_bytes;
        last_.remaining_bytes = 0;
      }
      virTypedParamsFree(params, n);
      virDomainFree(d);
    }
    virConnectClose(dconn);
  }

  virConnectPtr conn_;
  virDomainPtr dom_;
  LibvirtTarget target_;
  std::thread thread_;
  std::mutex mu_;
  bool done_ = false;
  std::string result_error_;
  std::atomic<bool> cancelled_{false};
  bool postcopy_started_ = false;
  bool postcopy_seen_ = false;
  bool final_done_ = false;
  policy::QemuSample last_;
};

}  // namespace

bool libvirt_available() { return true; }

Result<std::unique_ptr<MigrationSource>> start_libvirt_migration(const LibvirtTarget& t) {
  virConnectPtr conn = virConnectOpen(t.connect_uri.empty() ? nullptr : t.connect_uri.c_str());
  if (!conn) return error(ErrorCode::kUnavailable, "libvirt: " + last_error());
  virDomainPtr dom = virDomainLookupByName(conn, t.domain.c_str());
  if (!dom) {
    std::string e = last_error();
    virConnectClose(conn);
    return error(ErrorCode::kInvalidArgument, "libvirt domain " + t.domain + ": " + e);
  }
  auto src = std::make_unique<LibvirtSource>(conn, dom, t);
  if (auto st = src->start(); !st) return st;
  return std::unique_ptr<MigrationSource>(std::move(src));
}

}  // namespace ferry::apps
