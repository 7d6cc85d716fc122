// dataplane/security/link_security.cc — see link_security.h. TLS runs on memory BIOs: what
// OpenSSL writes goes out as TLS frames, what TLS frames bring is fed to it.
#include "dataplane/security/link_security.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>

#include "dataplane/handshake.h"
#include "dataplane/protocol.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {
namespace {

// Binds the frame keys to this protocol and, through the context, to the HELLO bytes.
constexpr char kExporterLabel[] = "EXPORTER-ferry-frame-keys";

struct PskEntry {
  std::string identity;
  std::vector<uint8_t> key;
};

// The keys the PSK callbacks see (the SSL_CTX's app data).
struct PskTable {
  std::vector<PskEntry> entries;
  const PskEntry* find(const char* identity) const {
    for (const auto& e : entries) {
      if (e.identity == identity) return &e;
    }
    return nullptr;
  }
};

// What a handshake's callbacks learned, for the one-sentence error.
struct HandshakeNotes {
  std::string identity;          // PSK, server: the identity the client proved
  std::string unknown_identity;  // PSK: the client named an identity the file lacks
};

bool file_readable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The reasons OpenSSL queued (most specific last), as one clause.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    const char* r = ERR_reason_error_string(e);
    if (!out.empty()) out += "; ";
    out += r ? r : "error " + std::to_string(e);
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Result<std::vector<PskEntry>> read_psk_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return error(ErrorCode::kInvalidArgument, "--tls-psk-file " + path + ": cannot read it");
  std::vector<PskEntry> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const auto bad = [&](const std::string& why) {
      return error(ErrorCode::kInvalidArgument,
                   "--tls-psk-file " + path + " line " + std::to_string(n) + ": " + why +
                       " (expected identity:hexkey, as QEMU's keys.psk)");
    };
    const size_t colon = line.rfind(':');
    if (colon == std::string::npos || colon == 0) return bad("no identity");
    PskEntry e;
    e.identity = line.substr(0, colon);
    const std::string hex = line.substr(colon + 1);
    if (hex.size() % 2 != 0) return bad("an odd number of hex digits");
    for (size_t i = 0; i < hex.size(); i += 2) {
      const int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
      if (hi < 0 || lo < 0) return bad("a key that is not hex");
      e.key.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    if (e.key.size() < 16) return bad("a key shorter than 16 bytes (32 hex digits)");
    if (e.key.size() > PSK_MAX_PSK_LEN) return bad("a key longer than 512 bytes");
    out.push_back(std::move(e));
  }
  if (out.empty()) {
    return error(ErrorCode::kInvalidArgument, "--tls-psk-file " + path + ": no key in it");
  }
  return out;
}

std::string subject_of(X509* cert) {
  BIO* b = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* p = nullptr;
  const long n = BIO_get_mem_data(b, &p);
  std::string s(p, static_cast<size_t>(std::max(n, 0L)));
  BIO_free(b);
  return s;
}

std::string common_name_of(X509* cert) {
  char cn[256] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) < 0) {
    return "";
  }
  return cn;
}

struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
};

}  // namespace

struct LinkSecurity::Impl {
  SecurityOptions opt;
  TlsRole role = TlsRole::kClient;
  SSL_CTX* ctx = nullptr;
  PskTable psk;

  ~Impl() {
    if (ctx) SSL_CTX_free(ctx);
  }

  Status load_x509();
  Status load_psk();
  Status authorize(const std::string& subject, const std::string& cn) const;
};

namespace {

unsigned int psk_client_cb(SSL* ssl, const char* /*hint*/, char* identity,
                           unsigned int max_identity_len, unsigned char* psk,
                           unsigned int max_psk_len) {
  const auto* table = static_cast<const PskTable*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const PskEntry& e = table->entries.front();
  if (e.identity.size() + 1 > max_identity_len || e.key.size() > max_psk_len) return 0;
  std::memcpy(identity, e.identity.c_str(), e.identity.size() + 1);
  std::memcpy(psk, e.key.data(), e.key.size());
  return static_cast<unsigned int>(e.key.size());
}

unsigned int psk_server_cb(SSL* ssl, const char* identity, unsigned char* psk,
                           unsigned int max_psk_len) {
  auto* notes = static_cast<HandshakeNotes*>(SSL_get_app_data(ssl));
  const auto* table = static_cast<const PskTable*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const PskEntry* e = identity ? table->find(identity) : nullptr;
  if (!e) {
    if (notes) notes->unknown_identity = identity ? identity : "";
    return 0;
  }
  if (e->key.size() > max_psk_len) return 0;
  if (notes) notes->identity = e->identity;
  std::memcpy(psk, e->key.data(), e->key.size());
  return static_cast<unsigned int>(e->key.size());
}

}  // namespace

Status LinkSecurity::Impl::load_x509() {
  const std::string& dir = opt.x509_dir;
  const bool server = role == TlsRole::kServer;
  const std::string ca = dir + "/ca-cert.pem";
  const std::string cert = dir + (server ? "/server-cert.pem" : "/client-cert.pem");
  const std::string key = dir + (server ? "/server-key.pem" : "/client-key.pem");
  for (const std::string& f : {ca, cert, key}) {
    if (!file_readable(f)) {
      return error(ErrorCode::kInvalidArgument,
                   "--tls-x509-dir " + dir + ": " + f.substr(dir.size() + 1) +
                       " is missing (QEMU's layout: ca-cert.pem, server-cert.pem and "
                       "server-key.pem for ferry recv, client-cert.pem and client-key.pem for "
                       "ferry send)");
    }
  }
  const auto failed = [&](const std::string& file) {
    return error(ErrorCode::kInvalidArgument, "--tls-x509-dir: " + file + ": " + openssl_errors());
  };
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) return failed(ca);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) return failed(cert);
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) return failed(key);
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return error(ErrorCode::kInvalidArgument,
                 "--tls-x509-dir: " + key + " is not the key of " + cert);
  }
  const std::string crl = dir + "/ca-crl.pem";
  if (file_readable(crl)) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (!lookup || X509_load_crl_file(lookup, crl.c_str(), X509_FILETYPE_PEM) <= 0) {
      return failed(crl);
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  }
  // Both ends prove themselves: the receiver demands the sender's certificate.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                     nullptr);
  return Status::ok();
}

Status LinkSecurity::Impl::load_psk() {
  auto entries = read_psk_file(opt.psk_file);
  if (!entries) return entries.status();
  psk.entries = std::move(*entries);
  if (role == TlsRole::kServer) {
    SSL_CTX_set_psk_server_callback(ctx, psk_server_cb);
  } else {
    SSL_CTX_set_psk_client_callback(ctx, psk_client_cb);
  }
  return Status::ok();
}

Status LinkSecurity::Impl::authorize(const std::string& subject, const std::string& cn) const {
  if (opt.authz.empty()) return Status::ok();
  for (const auto& name : opt.authz) {
    if (name == subject || (!cn.empty() && name == cn)) return Status::ok();
  }
  return error(ErrorCode::kAuth, "TLS: the peer '" + subject + "' is not in --tls-authz");
}

LinkSecurity::LinkSecurity(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LinkSecurity::~LinkSecurity() = default;

Result<std::shared_ptr<const LinkSecurity>> LinkSecurity::load(const SecurityOptions& options,
                                                               TlsRole role) {
  if (!options.x509_dir.empty() && !options.psk_file.empty()) {
    return error(ErrorCode::kInvalidArgument,
                 "give one of --tls-x509-dir and --tls-psk-file, not both");
  }
  if (!options.any()) {
    return error(ErrorCode::kInvalidArgument,
                 "no credentials: give --tls-x509-dir or --tls-psk-file");
  }
  if (role == TlsRole::kClient && !options.psk_file.empty() && !options.authz.empty()) {
    return error(ErrorCode::kInvalidArgument,
                 "--tls-authz on the sending side needs x509 (a PSK names no receiver)");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->role = role;
  impl->ctx = SSL_CTX_new(role == TlsRole::kServer ? TLS_server_method() : TLS_client_method());
  if (!impl->ctx) return error(ErrorCode::kInternal, "TLS: " + openssl_errors());
  SSL_CTX_set_min_proto_version(impl->ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(impl->ctx, TLS1_3_VERSION);
  // The TLS session only authenticates and agrees keys; nothing resumes it later.
  SSL_CTX_set_num_tickets(impl->ctx, 0);
  SSL_CTX_set_session_cache_mode(impl->ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_app_data(impl->ctx, &impl->psk);
  FERRY_RETURN_IF_ERROR(options.x509_dir.empty() ? impl->load_psk() : impl->load_x509());
  return std::shared_ptr<const LinkSecurity>(new LinkSecurity(std::move(impl)));
}

const char* LinkSecurity::mode() const { return impl_->psk.entries.empty() ? "x509" : "psk"; }
const char* LinkSecurity::flag() const {
  return impl_->psk.entries.empty() ? "--tls-x509-dir" : "--tls-psk-file";
}

Result<SessionKeys> LinkSecurity::handshake(Transport& link, HandshakeReader& reader,
                                            std::span<const uint8_t> hello,
                                            const std::string& peer_host,
                                            TimePoint deadline) const {
  const Impl& m = *impl_;
  const bool server = m.role == TlsRole::kServer;
  std::unique_ptr<SSL, SslDeleter> ssl(SSL_new(m.ctx));
  if (!ssl) return error(ErrorCode::kInternal, "TLS: " + openssl_errors());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl.get(), in, out);  // ssl owns both
  HandshakeNotes notes;
  SSL_set_app_data(ssl.get(), &notes);
  if (server) {
    SSL_set_accept_state(ssl.get());
  } else {
    SSL_set_connect_state(ssl.get());
    const std::string& name = m.opt.hostname.empty() ? peer_host : m.opt.hostname;
    if (m.psk.entries.empty() && !name.empty()) {
      in6_addr a6;
      in_addr a4;
      const bool ip = ::inet_pton(AF_INET, name.c_str(), &a4) == 1 ||
                      ::inet_pton(AF_INET6, name.c_str(), &a6) == 1;
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
      if (ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1
             : SSL_set1_host(ssl.get(), name.c_str()) != 1) {
        return error(ErrorCode::kInvalidArgument, "TLS: cannot check the name '" + name + "'");
      }
    }
  }

  const auto failure = [&](const std::string& how) -> Status {
    std::string why = openssl_errors();
    const long verify = SSL_get_verify_result(ssl.get());
    if (verify != X509_V_OK) {
      why = std::string("the peer's certificate: ") + X509_verify_cert_error_string(verify);
    }
    if (!notes.unknown_identity.empty()) {
      why = "the PSK identity '" + notes.unknown_identity + "' is not in --tls-psk-file";
    }
    return error(ErrorCode::kAuth, "TLS handshake " + how + ": " + why);
  };
  std::vector<uint8_t> chunk;
  for (;;) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl.get());
    // What TLS has to say goes out first, an alert included.
    while (BIO_ctrl_pending(out) > 0) {
      chunk.resize(std::min<size_t>(BIO_ctrl_pending(out), kMaxPayload));
      const int n = BIO_read(out, chunk.data(), static_cast<int>(chunk.size()));
      if (n <= 0) break;
      if (auto st = send_frame(link, FrameType::kTls, 0, {chunk.data(), static_cast<size_t>(n)},
                               ms_left(deadline));
          !st) {
        return Status(st.code(), "TLS handshake: " + st.message());
      }
    }
    if (r == 1) break;
    if (SSL_get_error(ssl.get(), r) != SSL_ERROR_WANT_READ) {
      // Let the alert reach the peer before the caller refuses or closes.
      (void)drain_tx(link, 1000);
      return failure("failed");
    }
    auto f = reader.next(deadline);
    if (!f) return Status(f.status().code(), "TLS handshake: " + f.status().message());
    if (f->header.type == FrameType::kAccept && !server) {
      return error(ErrorCode::kAuth, "rejected: " + rejection_reason(*f));
    }
    if (f->header.type != FrameType::kTls) {
      return error(ErrorCode::kProtocol, "TLS handshake: a frame of type " +
                                             std::to_string(static_cast<uint32_t>(f->header.type)) +
                                             " where TLS records were expected");
    }
    if (BIO_write(in, f->payload, static_cast<int>(f->header.len)) !=
        static_cast<int>(f->header.len)) {
      return error(ErrorCode::kInternal, "TLS: " + openssl_errors());
    }
  }

  SessionKeys keys;
  if (m.psk.entries.empty()) {
    X509* cert = SSL_get0_peer_certificate(ssl.get());
    if (!cert) return error(ErrorCode::kAuth, "TLS: the peer sent no certificate");
    keys.peer = subject_of(cert);
    FERRY_RETURN_IF_ERROR(m.authorize(keys.peer, common_name_of(cert)));
  } else {
    // (the server callback saw the identity; a failed binder would have ended the handshake)
    keys.peer = server ? notes.identity : m.psk.entries.front().identity;
    FERRY_RETURN_IF_ERROR(m.authorize(keys.peer, ""));
  }
  uint8_t material[2 * (SessionKeys::kKeySize + SessionKeys::kIvSize)];
  if (SSL_export_keying_material(ssl.get(), material, sizeof material, kExporterLabel,
                                 sizeof kExporterLabel - 1, hello.data(), hello.size(), 1) != 1) {
    return error(ErrorCode::kInternal, "TLS: exporting the frame keys: " + openssl_errors());
  }
  // The first half keys sender -> receiver, the second receiver -> sender.
  const uint8_t* s2r = material;
  const uint8_t* r2s = material + SessionKeys::kKeySize + SessionKeys::kIvSize;
  const uint8_t* tx = server ? r2s : s2r;
  const uint8_t* rx = server ? s2r : r2s;
  std::memcpy(keys.tx_key, tx, SessionKeys::kKeySize);
  std::memcpy(keys.tx_iv, tx + SessionKeys::kKeySize, SessionKeys::kIvSize);
  std::memcpy(keys.rx_key, rx, SessionKeys::kKeySize);
  std::memcpy(keys.rx_iv, rx + SessionKeys::kKeySize, SessionKeys::kIvSize);
  OPENSSL_cleanse(material, sizeof material);
  return keys;
}

const char* tls_library_version() { return OpenSSL_version(OPENSSL_VERSION); }

std::string spec_host(const std::string& spec) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos) return "";
  const std::string scheme = spec.substr(0, colon);
  if (scheme == "loopback" || scheme == "unix") return "";
  std::string rest = spec.substr(colon + 1);
  if (!rest.empty() && rest[0] == '[') {
    const size_t end = rest.find(']');
    return end == std::string::npos ? "" : rest.substr(1, end - 1);
  }
  const size_t port = rest.rfind(':');
  return port == std::string::npos ? rest : rest.substr(0, port);
}

bool spec_is_local(const std::string& spec) {
  if (spec.rfind("loopback:", 0) == 0) return true;
  const std::string host = spec_host(spec);
  if (host == "localhost" || host == "::1") return true;
  in_addr a4;
  return ::inet_pton(AF_INET, host.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

}  // namespace ferry::dataplane
