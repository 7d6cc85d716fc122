// dataplane/security/protected_transport.h — a Transport wrapper that seals every frame buffer
// it sends into one SEALED frame and opens every one it receives (protocol.h), with the keys
// of a TLS handshake (link_security.h). Used on every backend, so tcp, udp, dpdk and rdma get
// the same protection with no code of their own.
//
//   SEALED := type:u32(=9) len:u32 seq:u64 crc:u32(=0) ciphertext[len-16] tag[16]
//   ciphertext = AES-256-GCM(key, nonce = iv XOR seq (big-endian, right-aligned),
//                            aad = type|len|seq, the buffer's inner frames back to back)
// seq counts SEALED frames from kFirstDataSeq in each direction. The receiver decrypts with
// the seq it expects, so a frame dropped, replayed, reordered, altered or injected fails the
// link ("failed authentication"); nothing of it reaches the consumer.
//
// Zero-copy: the wrapper's pool is a view of the backend's with room for the SEALED header
// before each buffer and the tag after, so sealing and opening run in place.
#pragma once

#include <memory>

#include "dataplane/security/link_security.h"
#include "dataplane/transport.h"

namespace ferry::dataplane {

// What sealing adds to a buffer: the SEALED header and the tag.
inline constexpr size_t kSealTagSize = 16;
inline constexpr size_t kSealOverhead = kFrameHeaderSize + kSealTagSize;

// Wraps inner (its handshake done) so that every frame from now on is protected with keys.
std::unique_ptr<Transport> protect_link(std::unique_ptr<Transport> inner, const SessionKeys& keys);

}  // namespace ferry::dataplane
