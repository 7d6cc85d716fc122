// apps/libvirt_source_none.cc — ferry migrate --libvirt in a build without libvirt: says so.
#include "apps/migration_source.h"

namespace ferry::apps {

bool libvirt_available() { return false; }

Result<std::unique_ptr<MigrationSource>> start_libvirt_migration(const LibvirtTarget&) {
  return error(ErrorCode::kUnavailable,
               "this ferry was built without libvirt (apt-get install libvirt-dev, then "
               "reconfigure)");
}

}  // namespace ferry::apps
