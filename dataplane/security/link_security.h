// dataplane/security/link_security.h — who may open a ferry link, and the keys both ends agree
// on. Every link between hosts is mutually authenticated with TLS 1.3 (OpenSSL 3), then every
// frame is sealed with AES-256-GCM (protected_transport.h).
//
// Credentials use QEMU's formats, so one set serves QEMU and ferry:
//   x509: a directory with ca-cert.pem, server-cert.pem + server-key.pem (ferry recv),
//         client-cert.pem + client-key.pem (ferry send), and ca-crl.pem if present;
//   PSK:  a file of `identity:hexkey` lines (QEMU's keys.psk); ferry send uses the first.
//
// The TLS handshake travels in TLS frames between HELLO and ACCEPT (handshake.h), with no
// socket of its own, so every transport gets the same protection. Both ends then export the
// frame keys from the TLS session, bound to the HELLO bytes (channel, session id, features),
// and drop the session: one AEAD per frame is all that runs on the data path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace ferry::dataplane {

class Transport;
class HandshakeReader;

struct SecurityOptions {
  std::string x509_dir{};            // --tls-x509-dir
  std::string psk_file{};            // --tls-psk-file
  std::vector<std::string> authz{};  // --tls-authz: peer identities allowed; empty = any the
                                     // credentials authenticate
  // ferry send with x509: the name the receiver's certificate must carry (--tls-hostname);
  // empty = the host part of --peer.
  std::string hostname{};
  bool any() const { return !x509_dir.empty() || !psk_file.empty(); }
};

enum class TlsRole : uint8_t {
  kClient,  // ferry send: opens the link
  kServer,  // ferry recv
};

// The keys of one link, one per direction, and who the peer proved to be.
struct SessionKeys {
  static constexpr size_t kKeySize = 32;  // AES-256
  static constexpr size_t kIvSize = 12;   // GCM nonce; the frame sequence is xored in
  uint8_t tx_key[kKeySize], tx_iv[kIvSize];
  uint8_t rx_key[kKeySize], rx_iv[kIvSize];
  std::string peer;  // x509: the certificate's subject (RFC 2253); PSK: the identity
};

class LinkSecurity {
 public:
  // Loads and checks the credentials of one side (once per process; shared by its links).
  // Errors name the file, and the line for PSK files.
  static Result<std::shared_ptr<const LinkSecurity>> load(const SecurityOptions& options,
                                                          TlsRole role);
  ~LinkSecurity();
  LinkSecurity(const LinkSecurity&) = delete;
  LinkSecurity& operator=(const LinkSecurity&) = delete;

  // "x509" or "psk", and the flag that gives those credentials, for messages.
  const char* mode() const;
  const char* flag() const;

  // Runs the TLS handshake over TLS frames until deadline, reading with reader (a rejecting
  // ACCEPT from the receiver ends it with the receiver's reason). hello: the HELLO payload
  // the keys are bound to. peer_host: ferry send with x509, the name to verify (the
  // hostname option wins). Checks --tls-authz. kAuth errors say what failed, in one sentence.
  Result<SessionKeys> handshake(Transport& link, HandshakeReader& reader,
                                std::span<const uint8_t> hello, const std::string& peer_host,
                                TimePoint deadline) const;

 private:
  struct Impl;
  explicit LinkSecurity(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The TLS library in use ("OpenSSL 3.0.19 ..."), for --version.
const char* tls_library_version();

// The host part of a TRANSPORT:HOST:PORT spec ("[::1]" without brackets), for name checks and
// the loopback rule; empty when there is none (loopback:NAME).
std::string spec_host(const std::string& spec);
// Whether a TRANSPORT:ADDRESS spec stays on this host (127.0.0.0/8, ::1, localhost, or the
// in-process loopback transport): the only places ferry talks without credentials unless
// told --insecure.
bool spec_is_local(const std::string& spec);

}  // namespace ferry::dataplane
