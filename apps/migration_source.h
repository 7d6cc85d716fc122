// apps/migration_source.h — the source side of a migration as ferry migrate's policy loop
// drives it: the source QEMU over QMP, or a libvirt domain through the libvirt API (ferry
// migrate --libvirt), which owns the QEMU's monitor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "policy/engine.h"

namespace ferry::apps {

class MigrationSource {
 public:
  virtual ~MigrationSource() = default;
  // The migration's state in QEMU's terms (status "active", "postcopy-active",
  // "postcopy-paused", "completed", "failed", "cancelled", ...); error: why it failed.
  virtual Result<policy::QemuSample> sample(std::string& error) = 0;
  virtual Status set_max_bandwidth(int64_t bytes_per_s) = 0;
  virtual Status set_downtime_limit(int64_t ms) = 0;
  virtual Status start_postcopy() = 0;
  virtual void cancel() = 0;
};

// ferry migrate --libvirt: where the domain is and where it goes.
struct LibvirtTarget {
  std::string connect_uri;  // the source libvirtd (empty: qemu:///system)
  std::string domain;
  std::string dest_uri;     // the destination libvirtd as the source libvirtd reaches it
  std::string migrate_uri;  // unix:///PATH: ferry's socket here, the destination QEMU's there
  bool postcopy = false;    // VIR_MIGRATE_POSTCOPY (may switch later)
  bool auto_converge = false;
};

// Whether this ferry was built with libvirt (libvirt-dev at configure time).
bool libvirt_available();

// Starts `virsh migrate --live --p2p DOMAIN DEST_URI --migrateuri MIGRATE_URI` through the
// libvirt API (the call blocks until the end, on its own thread) and returns the control of
// it. Fails when libvirt or the domain cannot be reached.
Result<std::unique_ptr<MigrationSource>> start_libvirt_migration(const LibvirtTarget& target);

}  // namespace ferry::apps
