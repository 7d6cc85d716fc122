// apps/page_stream.cc — see page_stream.h.
#include "apps/page_stream.h"

#include <algorithm>
#include <cstring>

namespace ferry::apps {

using dataplane::FrameType;
using dataplane::FrameWriter;
using qemu::ItemKind;
using qemu::StreamParser;

namespace {

constexpr uint8_t kCodecVersion = 1;
constexpr size_t kCodecPayload = 13;
// OPAQUE frames are cut at this size (the link sees steady frames, the receiver small ones).
constexpr size_t kOpaqueFrame = 256u << 10;

void put_be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}
uint64_t get_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------- sender

PageStreamEncoder::PageStreamEncoder(const PageCodecOptions& options) : opt_(options) {
  effort_ = encoders::effort_for_level(opt_.level);
  counters_.effort.store(effort_);
  batch_pages_.reserve(kBatch);
  batch_index_.reserve(kBatch);
}

PageStreamEncoder::~PageStreamEncoder() = default;

Status PageStreamEncoder::start(std::span<const uint8_t> first, FrameWriter& out) {
  head_.insert(head_.end(), first.begin(), first.end());
  if (head_.size() < 4) return Status::ok();
  started_ = true;
  main_ = qemu::guess_channel_role(head_) == qemu::ChannelRole::kMain;
  std::vector<uint8_t> bytes;
  bytes.swap(head_);
  if (main_) {
    parser_ = std::make_unique<StreamParser>(qemu::ParserOptions{});
    parser_->push(bytes);
    return drain(bytes, out);
  }
  add_opaque(bytes, out);
  flush_opaque(out);
  return Status::ok();
}

Status PageStreamEncoder::encode(std::span<const uint8_t> bytes, FrameWriter& out) {
  if (!started_) return start(bytes, out);
  if (!main_) {
    add_opaque(bytes, out);
    flush_opaque(out);
    return Status::ok();
  }
  adapt_effort(out.backlog());
  parser_->push(bytes);
  return drain(bytes, out);
}

Status PageStreamEncoder::finish(FrameWriter& out) {
  if (!started_) {
    if (!head_.empty()) add_opaque(head_, out);
    flush_opaque(out);
    return Status::ok();
  }
  if (main_) {
    parser_->finish();
    // A stream cut short (a cancelled migration) still goes out as it was.
    Status st = drain({}, out);
    if (!st) return st;
  }
  flush_opaque(out);
  return Status::ok();
}

// Items the parser has for the bytes pushed so far; everything is framed before returning,
// because the items point into those bytes (`pushed`) or into the parser's carry buffer.
Status PageStreamEncoder::drain(std::span<const uint8_t> pushed, FrameWriter& out) {
  qemu::Item it;
  for (;;) {
    auto r = parser_->next(it);
    if (r == StreamParser::Next::kNeedMore || r == StreamParser::Next::kEnd) break;
    if (r == StreamParser::Next::kError) {
      const auto* e = parser_->error();
      if (parser_->consumed() == e->offset && e->message.find("truncated") != std::string::npos) {
        break;  // finish() on a stream cut mid-item: QEMU will say why
      }
      return Status(ErrorCode::kProtocol, "the source QEMU's stream is not valid at byte offset " +
                                              std::to_string(e->offset) + ": " + e->message);
    }
    const bool page = it.kind == ItemKind::kRamRecord && !it.in_package &&
                      (it.ram.type == qemu::RamRecordType::kPage ||
                       (it.ram.type == qemu::RamRecordType::kZero && it.ram.fill == 0)) &&
                      effort_ > 0;
    if (!page) {
      FERRY_RETURN_IF_ERROR(flush_pages(out));
      add_opaque(it.raw, out);
      continue;
    }
    flush_opaque(out);
    if (!batch_pages_.empty() &&
        (batch_pages_.size() == kBatch || it.ram.block != batch_block_)) {
      FERRY_RETURN_IF_ERROR(flush_pages(out));
    }
    if (batch_pages_.empty()) batch_block_.assign(it.ram.block);
    const uint32_t tp = parser_->target_page_size();
    const uint64_t index = it.ram.offset / tp;
    if (index > UINT32_MAX) {
      return Status(ErrorCode::kProtocol, "RAM offset beyond 16 TiB at byte offset " +
                                              std::to_string(it.stream_offset));
    }
    // A ZERO record has no page bytes: the encoder reads a shared zero page.
    static const std::vector<uint8_t> kZeroPage(encoders::kMaxPageSize, 0);
    const uint8_t* data =
        it.ram.type == qemu::RamRecordType::kZero ? kZeroPage.data() : it.ram.payload.data();
    // A record that straddled two reads sits in the parser's carry buffer, which the next
    // item may reuse: keep a copy until the batch is encoded.
    if (data != kZeroPage.data() &&
        (data < pushed.data() || data + tp > pushed.data() + pushed.size())) {
      if (staging_.size() < kBatch * tp) staging_.resize(kBatch * tp);
      uint8_t* copy = staging_.data() + batch_pages_.size() * tp;
      std::memcpy(copy, data, tp);
      data = copy;
    }
    batch_pages_.push_back({0, data});
    batch_index_.push_back(static_cast<uint32_t>(index));
  }
  FERRY_RETURN_IF_ERROR(flush_pages(out));
  flush_opaque(out);
  return Status::ok();
}

void PageStreamEncoder::add_opaque(std::span<const uint8_t> raw, FrameWriter& out) {
  while (!raw.empty()) {
    size_t take = std::min(raw.size(), kOpaqueFrame - opaque_.size());
    opaque_.insert(opaque_.end(), raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(take));
    raw = raw.subspan(take);
    if (opaque_.size() == kOpaqueFrame) flush_opaque(out);
  }
}

void PageStreamEncoder::flush_opaque(FrameWriter& out) {
  if (opaque_.empty()) return;
  uint8_t* p = out.begin_frame(opaque_.size());
  std::memcpy(p, opaque_.data(), opaque_.size());
  out.end_frame(FrameType::kOpaque, opaque_.size());
  opaque_.clear();
}

uint32_t PageStreamEncoder::block_id(std::string_view name) {
  auto [it, fresh] = block_ids_.try_emplace(std::string(name),
                                            static_cast<uint32_t>(block_ids_.size()));
  return it->second;
}

Status PageStreamEncoder::flush_pages(FrameWriter& out) {
  if (batch_pages_.empty()) return Status::ok();
  const uint32_t tp = parser_->target_page_size();
  if (!encoder_) {
    encoders::CodecConfig cfg;
    cfg.page_size = tp;
    cfg.cache_bytes = opt_.cache_bytes;
    auto e = encoders::Encoder::create(cfg);
    if (!e) return e.status();
    encoder_ = std::move(*e);
    encoder_->set_params(encoders::params_for_effort(effort_));
  }
  if (!codec_sent_) {
    uint8_t* p = out.begin_frame(kCodecPayload);
    p[0] = kCodecVersion;
    put_be(p + 1, tp, 4);
    put_be(p + 5, opt_.cache_bytes, 8);
    out.end_frame(FrameType::kCodec, kCodecPayload);
    codec_sent_ = true;
  }
  const uint32_t id = block_id(batch_block_);
  for (size_t i = 0; i < batch_pages_.size(); ++i) {
    batch_pages_[i].key = page_key(id, batch_index_[i]);
  }
  const size_t n = batch_pages_.size();
  const size_t head = 1 + batch_block_.size() + 2 + 4 * n;
  uint8_t* p = out.begin_frame(head + encoder_->max_encoded_size(n));
  p[0] = static_cast<uint8_t>(batch_block_.size());
  std::memcpy(p + 1, batch_block_.data(), batch_block_.size());
  uint8_t* q = p + 1 + batch_block_.size();
  put_be(q, n, 2);
  for (size_t i = 0; i < n; ++i) put_be(q + 2 + 4 * i, batch_index_[i], 4);
  encoders::Form forms[kBatch];
  uint32_t ends[kBatch];
  auto r = encoder_->encode_batch(batch_pages_, {p + head, encoder_->max_encoded_size(n)}, ends,
                                  {forms, n});
  if (r.pages != n) return Status(ErrorCode::kInternal, "page encoder stopped short");
  out.end_frame(FrameType::kPages, head + r.bytes);
  uint32_t prev = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto f = static_cast<size_t>(forms[i]);
    counters_.pages[f].fetch_add(1, std::memory_order_relaxed);
    counters_.bytes[f].fetch_add(ends[i] - prev, std::memory_order_relaxed);
    prev = ends[i];
  }
  counters_.page_bytes_in.fetch_add(n * tp, std::memory_order_relaxed);
  batch_pages_.clear();
  batch_index_.clear();
  return Status::ok();
}

// --codec auto: heavier encoding while the link is the bottleneck (bytes pile up toward it),
// lighter while the link waits for us. Never below fast (zero, same, delta, RLE cost little).
void PageStreamEncoder::adapt_effort(size_t backlog) {
  if (opt_.level != encoders::CodecLevel::kAuto || !encoder_) return;
  int next = effort_;
  if (backlog > opt_.backlog_high && effort_ < 3) ++next;
  if (backlog < opt_.backlog_low && effort_ > 1) --next;
  if (next == effort_) return;
  effort_ = next;
  encoder_->set_params(encoders::params_for_effort(effort_));
  counters_.effort.store(effort_, std::memory_order_relaxed);
  counters_.effort_changes.fetch_add(1, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------- receiver

PageStreamDecoder::~PageStreamDecoder() = default;

uint32_t PageStreamDecoder::block_id(std::string_view name) {
  auto [it, fresh] = block_ids_.try_emplace(std::string(name),
                                            static_cast<uint32_t>(block_ids_.size()));
  return it->second;
}

Status PageStreamDecoder::decode(FrameType type, std::span<const uint8_t> payload,
                                 dataplane::ByteQueue& out) {
  if (type == FrameType::kOpaque) {
    out.append(payload.data(), payload.size());
    // The bytes may hold RAM records of any block: the next page names its block.
    if (rebuilder_) rebuilder_->reset();
    return Status::ok();
  }
  if (type == FrameType::kCodec) {
    if (decoder_) return Status(ErrorCode::kProtocol, "a second CODEC frame");
    if (payload.size() != kCodecPayload || payload[0] != kCodecVersion) {
      return Status(ErrorCode::kProtocol, "CODEC frame: unsupported version or length " +
                                              std::to_string(payload.size()));
    }
    encoders::CodecConfig cfg;
    cfg.page_size = get_be(payload.data() + 1, 4);
    cfg.cache_bytes = get_be(payload.data() + 5, 8);
    if (cfg.cache_bytes > max_cache_bytes_) {
      return Status(ErrorCode::kInvalidArgument,
                    "CODEC frame: the sender's page cache (" + std::to_string(cfg.cache_bytes >> 20) +
                        " MiB) is larger than --max-cache-mib (" +
                        std::to_string(max_cache_bytes_ >> 20) + " MiB)");
    }
    auto d = encoders::Decoder::create(cfg);
    if (!d) return Status(d.status().code(), "CODEC frame: " + d.status().message());
    decoder_ = std::move(*d);
    page_size_ = cfg.page_size;
    rebuilder_ = std::make_unique<qemu::StreamRebuilder>(static_cast<uint32_t>(page_size_));
    return Status::ok();
  }
  if (type != FrameType::kPages) {
    return Status(ErrorCode::kProtocol, "unexpected frame type " +
                                            std::to_string(static_cast<uint32_t>(type)));
  }
  if (!decoder_) return Status(ErrorCode::kProtocol, "PAGES frame before the CODEC frame");
  const uint8_t* p = payload.data();
  const size_t len = payload.size();
  if (len < 1 || p[0] == 0 || len < 1u + p[0] + 2) {
    return Status(ErrorCode::kProtocol, "PAGES frame: truncated header (byte offset 0)");
  }
  std::string_view block(reinterpret_cast<const char*>(p + 1), p[0]);
  const size_t at_count = 1 + p[0];
  const size_t n = get_be(p + at_count, 2);
  const size_t at_index = at_count + 2;
  if (n == 0 || len < at_index + 4 * n) {
    return Status(ErrorCode::kProtocol, "PAGES frame: bad page count " + std::to_string(n) +
                                            " at byte offset " + std::to_string(at_count));
  }
  const uint32_t id = block_id(block);
  keys_.resize(n);
  forms_.resize(n);
  pages_buf_.resize(n * page_size_);
  for (size_t i = 0; i < n; ++i) {
    keys_[i] = page_key(id, static_cast<uint32_t>(get_be(p + at_index + 4 * i, 4)));
  }
  const size_t at_records = at_index + 4 * n;
  auto r = decoder_->decode_batch(keys_, payload.subspan(at_records), pages_buf_.data(), forms_);
  if (!r.ok()) {
    return Status(ErrorCode::kProtocol, "PAGES frame: " +
                                            std::string(encoders::decode_error_name(r.error)) +
                                            " at byte offset " +
                                            std::to_string(at_records + r.offset));
  }
  for (size_t i = 0; i < n; ++i) {
    qemu::RamRecordOut rec;
    rec.block = block;
    rec.offset = (keys_[i] & ((uint64_t{1} << 40) - 1)) * page_size_;
    if (forms_[i] == encoders::Form::kZero) {
      rec.type = qemu::RamRecordType::kZero;
    } else {
      rec.type = qemu::RamRecordType::kPage;
      rec.payload = {pages_buf_.data() + i * page_size_, page_size_};
    }
    const size_t max = qemu::StreamRebuilder::ram_record_size(rec);
    const size_t w = rebuilder_->write_ram_record(rec, {out.reserve(max), max});
    if (w == 0) {
      return Status(ErrorCode::kProtocol, "PAGES frame: cannot rebuild page " +
                                              std::to_string(i) + " of block '" +
                                              std::string(block) + "'");
    }
    out.commit(w);
  }
  pages_.fetch_add(n, std::memory_order_relaxed);
  return Status::ok();
}

}  // namespace ferry::apps
