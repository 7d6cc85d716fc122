// dataplane/security/protected_transport.cc — see protected_transport.h.
#include "dataplane/security/protected_transport.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>
#include <utility>
#include <vector>

#include "common/endian.h"

namespace ferry::dataplane {
namespace {

// One direction's AES-256-GCM: the key set once, a nonce per frame.
class Aead {
 public:
  Aead(const uint8_t* key, const uint8_t* iv, bool encrypt) : encrypt_(encrypt) {
    std::memcpy(iv_, iv, sizeof iv_);
    ctx_ = EVP_CIPHER_CTX_new();
    ok_ = ctx_ &&
          EVP_CipherInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, key, nullptr, encrypt ? 1 : 0) == 1;
  }
  ~Aead() {
    EVP_CIPHER_CTX_free(ctx_);
    OPENSSL_cleanse(iv_, sizeof iv_);
  }
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  bool ok() const { return ok_; }

  // In place: data[0..n) is encrypted (decrypted), tag written (checked). false = the tag did
  // not verify (or OpenSSL failed).
  bool run(uint64_t seq, const uint8_t* aad, size_t aad_len, uint8_t* data, size_t n,
           uint8_t* tag) noexcept {
    uint8_t nonce[SessionKeys::kIvSize];
    std::memcpy(nonce, iv_, sizeof nonce);
    for (int i = 0; i < 8; ++i) nonce[4 + i] ^= static_cast<uint8_t>(seq >> (56 - 8 * i));
    int out = 0;
    if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce, encrypt_ ? 1 : 0) != 1 ||
        EVP_CipherUpdate(ctx_, nullptr, &out, aad, static_cast<int>(aad_len)) != 1 ||
        (n && EVP_CipherUpdate(ctx_, data, &out, data, static_cast<int>(n)) != 1)) {
      return false;
    }
    if (encrypt_) {
      return EVP_CipherFinal_ex(ctx_, data + n, &out) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, kSealTagSize, tag) == 1;
    }
    return EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, kSealTagSize, tag) == 1 &&
           EVP_CipherFinal_ex(ctx_, data + n, &out) == 1;
  }

 private:
  EVP_CIPHER_CTX* ctx_ = nullptr;
  uint8_t iv_[SessionKeys::kIvSize];
  bool encrypt_;
  bool ok_ = false;
};

// The authenticated part of a SEALED header: type, len, seq.
constexpr size_t kAadSize = 16;

class ProtectedTransport final : public Transport {
 public:
  ProtectedTransport(std::unique_ptr<Transport> inner, const SessionKeys& keys)
      : inner_(std::move(inner)),
        tx_(keys.tx_key, keys.tx_iv, true),
        rx_(keys.rx_key, keys.rx_iv, false),
        tx_view_(FramePool::view(inner_->pool(), kFrameHeaderSize, kSealTagSize)),
        pending_(inner_->pool().size()),
        peer_(keys.peer) {
    if (!tx_.ok() || !rx_.ok()) fail("AES-256-GCM is not available in this OpenSSL");
  }

  const char* kind() const noexcept override { return inner_->kind(); }
  TransportCaps caps() const noexcept override {
    TransportCaps c = inner_->caps();
    c.max_frame -= kSealOverhead;
    return c;
  }
  FramePool& pool() noexcept override { return *tx_view_; }

  size_t tx_burst(std::span<FrameBuf* const> frames) noexcept override {
    if (closing_ || failed_) return 0;
    size_t n = 0;
    for (; n < frames.size() && pending_count_ < pending_.size(); ++n) {
      FrameBuf* b = &inner_->pool().at(frames[n]->index);
      seal(*b, frames[n]->len);
      pending_[(pending_head_ + pending_count_++) % pending_.size()] = b;
      pending_bytes_ += b->len;
    }
    flush();
    return n;
  }

  size_t reap_tx(std::span<FrameBuf*> out) noexcept override {
    const size_t n = inner_->reap_tx(out);
    for (size_t i = 0; i < n; ++i) out[i] = &tx_view_->at(out[i]->index);
    return n;
  }

  size_t rx_burst(std::span<FrameBuf*> out) noexcept override {
    if (failed_) return 0;
    const size_t n = inner_->rx_burst(out);
    for (size_t i = 0; i < n; ++i) {
      FrameBuf* opened = open(*out[i]);
      if (!opened) {
        // Nothing of a frame that failed, or of what came after it, reaches the consumer.
        for (size_t j = i; j < n; ++j) out[j]->pool->free(out[j]);
        return i;
      }
      out[i] = opened;
    }
    return n;
  }

  size_t progress(TimePoint now) noexcept override { return flush() + inner_->progress(now); }
  TimePoint next_deadline() const noexcept override { return inner_->next_deadline(); }

  // The inner link closes once every sealed buffer went to it (flush).
  void close_tx() noexcept override {
    closing_ = true;
    flush();
  }

  LinkState state() const noexcept override {
    return failed_ ? LinkState::kFailed : inner_->state();
  }
  const Status& error() const noexcept override { return failed_ ? error_ : inner_->error(); }
  size_t tx_in_flight_bytes() const noexcept override {
    return inner_->tx_in_flight_bytes() + pending_bytes_;
  }
  size_t tx_unsent_bytes() const noexcept override {
    return inner_->tx_unsent_bytes() + pending_bytes_;
  }
  int wait_fd() const noexcept override { return inner_->wait_fd(); }
  uint32_t wait_events(bool want_rx, bool want_tx) const noexcept override {
    return inner_->wait_events(want_rx, want_tx || pending_count_ > 0);
  }
  void set_buffer_hint(size_t bytes) noexcept override { inner_->set_buffer_hint(bytes); }
  void set_unsent_limit(size_t bytes) noexcept override { inner_->set_unsent_limit(bytes); }
  double min_rtt_s() const noexcept override { return inner_->min_rtt_s(); }
  void set_pacing_rate(double bytes_per_s) noexcept override {
    inner_->set_pacing_rate(bytes_per_s);
  }
  json::Value link_stats() const override {
    json::Value v = inner_->link_stats();
    if (!v.is_object()) v = json::Value::object();
    v.set("protection", json::Value("tls1.3/aes-256-gcm"));
    v.set("peer", json::Value(peer_));
    return v;
  }
  uint64_t retransmits() const noexcept override { return inner_->retransmits(); }

 private:
  void fail(std::string why) noexcept {
    if (failed_) return;
    failed_ = true;
    error_ = Status(ErrorCode::kAuth, std::move(why));
  }

  // b holds the inner frames from kFrameHeaderSize on (the view's data); frames_len bytes.
  void seal(FrameBuf& b, uint32_t frames_len) noexcept {
    uint8_t* h = b.data;
    const uint32_t len = frames_len + static_cast<uint32_t>(kSealTagSize);
    store_be32(h, static_cast<uint32_t>(FrameType::kSealed));
    store_be32(h + 4, len);
    store_be64(h + 8, tx_seq_);
    store_be32(h + 16, 0);
    if (!tx_.run(tx_seq_, h, kAadSize, h + kFrameHeaderSize, frames_len,
                 h + kFrameHeaderSize + frames_len)) {
      fail("link: sealing a frame failed (OpenSSL)");
    }
    ++tx_seq_;
    b.len = static_cast<uint32_t>(kFrameHeaderSize) + len;
  }

  size_t flush() noexcept {
    size_t sent = 0;
    while (pending_count_) {
      FrameBuf* burst[32];
      const size_t m = std::min<size_t>(pending_count_, 32);
      for (size_t i = 0; i < m; ++i) burst[i] = pending_[(pending_head_ + i) % pending_.size()];
      const size_t n = inner_->tx_burst({burst, m});
      for (size_t i = 0; i < n; ++i) pending_bytes_ -= burst[i]->len;
      pending_head_ = (pending_head_ + n) % pending_.size();
      pending_count_ -= n;
      sent += n;
      if (n < m) break;
    }
    if (closing_ && pending_count_ == 0 && !inner_closed_) {
      inner_closed_ = true;
      inner_->close_tx();
    }
    return sent;
  }

  FramePool& view_of(FramePool* backing) {
    if (backing == &inner_->pool()) return *tx_view_;
    for (auto& [pool, view] : rx_views_) {
      if (pool == backing) return *view;
    }
    rx_views_.emplace_back(backing, FramePool::view(*backing, kFrameHeaderSize, kSealTagSize));
    return *rx_views_.back().second;
  }

  // Opens every SEALED frame of b in place and packs their inner frames back to back where
  // the view's buffer begins; null (and the link failed) if any frame fails.
  FrameBuf* open(FrameBuf& b) noexcept {
    size_t pos = 0, total = 0;
    uint8_t* const out = b.data + kFrameHeaderSize;
    while (pos < b.len) {
      uint8_t* h = b.data + pos;
      const auto where = [&] { return " at link byte offset " + std::to_string(rx_offset_ + pos); };
      if (b.len - pos < kFrameHeaderSize) {
        fail("link: a truncated frame" + where() + " on an authenticated link");
        return nullptr;
      }
      const uint32_t type = load_be32(h), len = load_be32(h + 4);
      const uint64_t seq = load_be64(h + 8);
      if (type != static_cast<uint32_t>(FrameType::kSealed)) {
        fail("link: an unprotected frame (type " + std::to_string(type) + ")" + where() +
             " on an authenticated link");
        return nullptr;
      }
      if (len < kSealTagSize || len > b.len - pos - kFrameHeaderSize) {
        fail("link: a SEALED frame of bad length " + std::to_string(len) + where());
        return nullptr;
      }
      if (seq != rx_seq_) {
        fail("link: SEALED frame seq " + std::to_string(seq) + where() + " where seq " +
             std::to_string(rx_seq_) + " was due (dropped, replayed or reordered)");
        return nullptr;
      }
      const size_t plain = len - kSealTagSize;
      uint8_t* body = h + kFrameHeaderSize;
      if (!rx_.run(rx_seq_, h, kAadSize, body, plain, body + plain)) {
        fail("link: SEALED frame seq " + std::to_string(seq) + where() +
             " failed authentication (altered on the way, or not from the authenticated peer)");
        return nullptr;
      }
      ++rx_seq_;
      if (body != out + total) std::memmove(out + total, body, plain);
      total += plain;
      pos += kFrameHeaderSize + len;
    }
    rx_offset_ += b.len;
    FrameBuf& v = view_of(b.pool).at(b.index);
    v.len = static_cast<uint32_t>(total);
    return &v;
  }

  std::unique_ptr<Transport> inner_;
  Aead tx_, rx_;
  std::unique_ptr<FramePool> tx_view_;  // what the owner allocates from: room to seal in place
  std::vector<std::pair<FramePool*, std::unique_ptr<FramePool>>> rx_views_;  // other rx pools
  // Sealed buffers the inner transport has not taken yet, in order.
  std::vector<FrameBuf*> pending_;
  size_t pending_head_ = 0, pending_count_ = 0, pending_bytes_ = 0;
  uint64_t tx_seq_ = kFirstDataSeq, rx_seq_ = kFirstDataSeq;
  uint64_t rx_offset_ = 0;
  std::string peer_;  // who authenticated (for stats)
  bool closing_ = false, inner_closed_ = false;
  bool failed_ = false;
  Status error_;
};

}  // namespace

std::unique_ptr<Transport> protect_link(std::unique_ptr<Transport> inner, const SessionKeys& keys) {
  return std::make_unique<ProtectedTransport>(std::move(inner), keys);
}

}  // namespace ferry::dataplane
