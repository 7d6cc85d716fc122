#include "apps/build_info.h"

#include "apps/migration_source.h"
#include "dataplane/security/link_security.h"
#include "dataplane/transport.h"
#include "encoders/kernels.h"
#include "encoders/page_codec.h"

namespace ferry::apps {

void print_build_info(FILE* out) {
  std::fprintf(out, "ferry %s\n", FERRY_VERSION);
  std::fprintf(out, "page kernels (chosen: %s):\n", encoders::kernels().name);
  for (const auto& v : encoders::kernel_variants()) {
    std::fprintf(out, "  %-8s %s\n", v.kernels != nullptr ? v.kernels->name : "?",
                 v.available ? "yes" : v.why_not);
  }
  std::fprintf(out, "heavy codecs:\n");
  for (const auto& c : encoders::heavy_codecs()) {
    std::fprintf(out, "  %-8s %s\n", c.name, c.available ? "yes" : c.why_not);
  }
  std::fprintf(out, "link protection:\n  TLS 1.3 (x509, PSK) + AES-256-GCM frames  (%s)\n",
               dataplane::tls_library_version());
  std::fprintf(out, "transports:\n");
  for (const auto& t : dataplane::transports()) {
    std::fprintf(out, "  %-8s %s  (%s)\n", t.name, t.available ? "yes" : t.why_not, t.summary);
  }
  std::fprintf(out, "integrations:\n  libvirt  %s  (ferry migrate --libvirt)\n",
               libvirt_available() ? "yes" : "no: built without libvirt-dev");
}

}  // namespace ferry::apps
