// pipeline/page_stream.h — ferry's page encoding on the wire: the StreamCodec pair that turns the
// main migration stream into OPAQUE frames (everything that is not a RAM page) and PAGES
// frames (RAM pages encoded by encoders/), and back into a valid QEMU stream on the receiver.
// Wires qemu-channel (parser, rebuilder) to encoders/ and dataplane/ frames.
//
// Frame payloads (big-endian unless noted; frame types in dataplane/protocol.h):
//   CODEC := version:u8(=7) page_size:u32 cache_bytes:u64 shards:u8 cache_policy:u8
//            max_pages:u16 zstd_window_log:u8 lzma_dict:u32                      (22 bytes)
//            once, before the first PAGES frame; the receiver builds one Decoder per shard
//            from it, each with cache_bytes / shards and the sender's replacement policy
//            (encoders::CachePolicy: 0 lru, 1 aged-clock; cache_bytes is the budget within
//            which aged-clock sizes itself, the same way on both ends). The last three are limits
//            the sender keeps for the whole session:
//     max_pages        most pages in one PAGES frame (1 .. 4096; ferry send: 64)
//     zstd_window_log  its zstd streams' window is at most 2^zstd_window_log bytes (10 .. 24;
//                      ferry send: 23), or 0: it sends no zstd stream block
//     lzma_dict        its LZMA2 streams' dictionary in bytes (4 KiB .. 2 MiB; ferry send:
//                      256 KiB, preset 0), or 0: it sends no LZMA2 stream block
//            The receiver refuses a CODEC frame whose limits exceed its own (DecoderLimits)
//            with one sentence naming the field, holds exactly the announced sizes, and
//            fails the session on a PAGES frame beyond them. Other versions (1..4 had no
//            limits, 5 a fixed-size aged-clock) are refused: both ends must run the same ferry.
//   PAGES := flags:u8 block_len:u8 block[block_len] count:u16 body
//     flags      bit 0 STREAM: body = kind:u8 content_len:u32 block, the content compressed
//                as the next block of the shard's stream of that kind (1 zstd, 2 LZMA2;
//                encoders/stream_compressor.h); otherwise body = content. Bits 1..7: the
//                shard (< shards) whose Decoder, page cache and streams the frame belongs to
//     content    page_index:u32[count] record[count]
//     block      the RAMBlock idstr of every page in the frame
//     count      1 .. max_pages (CODEC)
//     page_index offset in the block / page_size
//     record     encoders/ page record (docs/ENCODING.md; its length field is little-endian)
//
//   CACHES_FROZEN := page_size:u32
//            on the main channel where QEMU's post-copy package begins (with postcopy-preempt
//            routing, ferry send's post-copy hold): from here on both ends' page caches stay as
//            they are; later PAGES records are still encoded against them (postcopy_bases.h)
//   POSTCOPY_PAGE := block_len:u8 block[block_len] offset:u64 crc:u32 record
//            on the postcopy-preempt channel, between two of QEMU's records: one page, which
//            the receiver writes as a PAGE record naming its block. record is a page record
//            against the main channel's frozen copy of the page (key and shard as in PAGES),
//            or without a base when there is none. offset is the page's byte offset in the
//            block, crc the CRC32C of the page, checked after decoding.
//
// Effort (--codec): 0 none; 1 fast = zero, same, delta, RLE per page; 2 + LZ4 per page;
// 3..5 = fast per page, then the frame's records through one zstd stream at level 1, 3, 9
// (matches across pages, like QEMU's multifd zstd, on top of ferry's zero/same/delta);
// 6 = the same through one LZMA2 stream (preset 0: fewer bytes than zstd -9 at a third of
// its speed, for links far slower than the encoder). Each shard keeps its zstd and its LZMA2
// stream for the whole session, so moving between 5 and 6 restarts neither window.
// auto moves along 1, 3, 4, 5, 6 by link backlog (policy/effort.h); max is 6.
//
// Encode shards (--encode-threads N): page i of a block belongs to shard i % N (all pages of a
// block whose host pages are larger than the target page go to shard 0, so a host page stays
// whole and in order, as post-copy needs). Each shard has its own Encoder, page cache and zstd
// stream; the pages of one read from QEMU are encoded by N threads at once, one per shard,
// and their frames go out in the order their batches closed. A page always meets the same
// shard, so its copies keep their order; pages of different shards may swap places within a
// stretch between two non-page items, which QEMU does not care about (a page appears once per
// section, and every item between sections is a barrier here).
//
// Ordering: frames keep stream order (up to the shards' swaps above), so every RAM record
// reaches the destination in the order the source wrote it, naming the same block. The
// receiver's rebuilder may then emit RAM_SAVE_FLAG_CONTINUE only when the record it wrote just
// before was its own page record of the same block: any OPAQUE frame in between (which may
// hold XBZRLE records, section headers or records inside a PACKAGED blob, kept byte-exact)
// makes it name the block again.
//
// Which records become pages: PAGE records and ZERO records with fill 0 on the main channel,
// outside PACKAGED blobs (a blob's length is fixed by its header, so its bytes stay exact).
// Everything else — including multifd channels, whose packets are framed by their own
// headers — travels as OPAQUE bytes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/fork_join.h"
#include "encoders/page_codec.h"
#include "encoders/stream_compressor.h"
#include "pipeline/postcopy_bases.h"
#include "pipeline/preempt_route.h"
#include "pipeline/stream_codec.h"
#include "pipeline/stream_stats.h"
#include "qemu-channel/stream_parser.h"
#include "qemu-channel/stream_rebuilder.h"

namespace ferry::pipeline {

struct PageCodecOptions {
  encoders::CodecLevel level = encoders::CodecLevel::kFast;
  // >= 0: this effort, fixed, whatever the level (ferry inspect --simulate-codec).
  int fixed_effort = -1;
  size_t cache_bytes = 1024u << 20;  // the caches' budget, all shards together
  encoders::CachePolicy cache_policy = encoders::kDefaultCachePolicy;
  unsigned encode_threads = 1;  // shards, each encoded on its own thread; 1 .. kMaxShards
};

// What went out, by form; readable from another thread.
struct PageCodecCounters {
  std::atomic<uint64_t> pages[encoders::kFormCount] = {};
  std::atomic<uint64_t> bytes[encoders::kFormCount] = {};  // record bytes, with headers
  std::atomic<uint64_t> page_bytes_in{0};                  // pages * page size
  std::atomic<int> effort{0};
  std::atomic<uint64_t> effort_changes{0};
  std::atomic<uint64_t> effort_pages[encoders::kMaxEffort + 1] = {};  // pages encoded at each
  std::atomic<uint64_t> wire_bytes{0};  // PAGES bodies as sent (after the zstd stream)
  std::atomic<uint64_t> encode_ns{0};   // time in encode() on the main channel (parse + encode)
  std::atomic<unsigned> shards{0};      // encode shards in use (0 until the first page)
  std::atomic<uint64_t> shard_pages[64] = {};  // pages encoded per shard (kMaxShards)
  // The page caches of all shards (encoders::PageCache counters), as of the last batch.
  std::atomic<uint64_t> cache_hits{0}, cache_misses{0}, cache_evictions{0}, cache_declined{0};
  // Their capacity now and the most they held (bytes), and how often they resized.
  std::atomic<uint64_t> cache_capacity_bytes{0}, cache_peak_bytes{0}, cache_resizes{0};
  // The preempt channel's POSTCOPY_PAGE frames: pages, their records' bytes, and how many
  // went as same or delta against the frozen caches.
  std::atomic<uint64_t> postcopy_pages{0}, postcopy_record_bytes{0}, postcopy_against_base{0};
  // When the stream's first post-copy discard came by (steady clock, ns; 0 = none): QEMU
  // stopped the source and begins the switch.
  std::atomic<int64_t> discard_seen_ns{0};
};

inline constexpr unsigned kMaxShards = 64;           // the shard fits PAGES flags bits 1..7
inline constexpr unsigned kMaxPagesPerFrame = 4096;  // the grammar's bound on PAGES count

// What a receiver accepts from a sender's CODEC frame; every field bounds memory the receiver
// allocates on the sender's word. The defaults admit ferry send at any of its settings (64
// pages of up to 64 KiB per frame, 64 shards, zstd 2^23 and LZMA2 256 KiB per shard) with room.
struct DecoderLimits {
  size_t max_cache_bytes = 256u << 20;  // the page caches of all shards (--max-cache-mib)
  unsigned max_pages = kMaxPagesPerFrame;
  size_t max_frame_page_bytes = 16u << 20;  // max_pages * page_size: one frame's decoded pages
  int max_zstd_window_log = encoders::kStreamWindowLogMax;
  uint32_t max_lzma_dict = encoders::kLzmaDictMax;
  // All shards' stream windows together (each shard may keep a zstd and an LZMA2 stream).
  size_t max_stream_bytes = 1u << 30;
  // Distinct RAMBlock names over the session (a block id each; QEMU has a few dozen).
  size_t max_blocks = 65536;
};

// The sender's codec of one channel: QEMU bytes in, OPAQUE/CODEC/PAGES frames out. Owned by
// the channel (ChannelSet); encode() and finish() run on its pump's thread only. counters(),
// stream_stats()'s counters and set_effort() may be used from any thread.
class PageStreamEncoder final : public StreamCodec {
 public:
  explicit PageStreamEncoder(const PageCodecOptions& options);
  ~PageStreamEncoder() override;

  Status encode(std::span<const uint8_t> bytes, FrameWriter& out) override;
  Status finish(FrameWriter& out) override;
  Status decode(dataplane::FrameType, std::span<const uint8_t>, ByteQueue&) override {
    return Status(ErrorCode::kInternal, "a sender's codec does not decode");
  }

  // Post-copy (StreamCodec::hold): the main channel only, once its stream began.
  bool hold() override;
  size_t held_bytes() const override { return held_bytes_; }
  bool postcopy_package_framed() const override { return package_framed_; }
  Status release(size_t bytes, FrameWriter& out) override;
  void promote(std::string_view block, uint64_t start, uint64_t length) override;
  uint64_t requests_missed() const override { return missed_; }
  // Pages released ahead of the held stream (promote()).
  uint64_t promoted_pages() const { return promoted_.load(std::memory_order_relaxed); }

  // Post-copy with postcopy-preempt: the route between this session's main and preempt
  // channels (preempt_route.h), shared by the codecs of all its channels; null = none. The
  // main channel's codec hands a promoted page over to it, instead of framing it on the main
  // link, whenever the preempt channel takes it; the preempt channel's codec puts what it got
  // into its stream between QEMU's records. Before the pump starts.
  void set_preempt_route(PreemptRoute* route) { route_ = route; }
  // With a route: the main channel's caches, frozen where QEMU's post-copy package begins,
  // and the preempt channel's pages encoded against them (postcopy_bases.h). Before the pump
  // starts.
  void set_postcopy_bases(PostcopyBases* bases) { bases_ = bases; }
  int wake_fd() const override { return preempt_ ? route_->wake_fd() : -1; }
  Status write_routed(FrameWriter& out) override;
  // The most bytes held at once.
  uint64_t held_peak_bytes() const { return held_peak_.load(std::memory_order_relaxed); }
  // Held pages released early because they followed a page asked for (page_stream.cc,
  // kTrailPages).
  uint64_t held_pages_followed() const { return followed_.load(std::memory_order_relaxed); }

  const PageCodecCounters& counters() const { return counters_; }
  const PageCodecOptions& options() const { return opt_; }
  // The QEMU stream's counts (pages by class, commands, multifd packets), from the parse this
  // encoder runs anyway on the main channel (and from a counting parser on other channels,
  // which it forwards unparsed): the channel needs no StreamStats tap of its own. Counters
  // readable from any thread; role() and note() once the pump ended.
  const StreamStats& stream_stats() const { return stats_; }
  // The pages it parses answer the page requests in `requests` (StreamStats::track_requests).
  // Before the pump starts.
  void track_requests(PageRequestTracker* requests) { stats_.track_requests(requests); }
  // Any thread: fix the effort (0..5) from the next batch on, or -1 to return to the level's
  // own choice. The policy engine of `ferry migrate` uses it.
  void set_effort(int effort) { requested_effort_.store(effort, std::memory_order_relaxed); }

 private:
  static constexpr size_t kBatch = 64;  // pages per PAGES frame at most
  // Pages of one block and one shard, in stream order: one PAGES frame.
  struct Batch {
    unsigned shard = 0;
    std::string block;
    std::vector<encoders::PageRef> pages;
    std::vector<uint32_t> index;
    // After encoding: the frame payload (when shards > 1), its record ends and forms.
    std::vector<uint8_t> frame;
    size_t frame_len = 0;
    size_t wire_len = 0;  // PAGES body as sent
    uint32_t ends[kBatch];
    encoders::Form forms[kBatch];
    Status status;
  };
  struct Shard {
    std::unique_ptr<encoders::Encoder> encoder;
    std::unique_ptr<encoders::StreamCompressor> zstd;  // efforts 3..5
    std::unique_ptr<encoders::StreamCompressor> lzma;  // effort 6
    encoders::StreamCompressor* stream = nullptr;      // the one in use (null: none)
    std::vector<uint8_t> records;                      // a batch's records before the stream
    Batch open;                                        // the batch being filled
  };
  // One item of the held stream: a page to encode, or bytes that go as they are.
  struct Held {
    bool page = false;
    bool released = false;     // framed already (a promoted page waits here until the front)
    bool freeze = false;       // QEMU's post-copy package begins here (freeze_caches())
    bool package_end = false;  // and ends in these bytes (postcopy_package_framed())
    std::string block;
    uint32_t index = 0;
    std::vector<uint8_t> bytes;  // the page (empty: a zero page) or the raw item bytes
  };
  Status start(std::span<const uint8_t> first, FrameWriter& out);
  Result<bool> next_item(qemu::Item& it, std::string_view stream);
  Status drain(std::span<const uint8_t> pushed, FrameWriter& out);
  void hold_item(const qemu::Item& it, bool page, bool freeze = false);
  void forget_held(const std::string& block, uint32_t index, uint64_t seq);
  void add_page(std::string_view block, uint32_t index, const uint8_t* data, FrameWriter& out);
  void add_opaque(std::span<const uint8_t> raw, FrameWriter& out);
  void flush_opaque(FrameWriter& out);
  unsigned shard_of_page(std::string_view block, uint64_t index);
  void close_batch(Shard& sh);
  Status flush_pages(FrameWriter& out);
  size_t max_frame(const Batch& b) const;
  Result<size_t> encode_batch(Shard& sh, Batch& b, uint8_t* dst);
  void adapt_effort(size_t backlog);
  Status apply_effort();
  uint32_t block_id(std::string_view name);

  PageCodecOptions opt_;
  bool started_ = false;
  bool main_ = false;          // only the main channel's records are encoded
  bool preempt_ = false;       // the postcopy-preempt channel, with a route: parsed, not encoded
  std::vector<uint8_t> head_;  // first bytes, until the channel's role is known
  std::unique_ptr<qemu::StreamParser> parser_;
  std::vector<Shard> shards_;
  std::unique_ptr<ForkJoin> threads_;  // shards > 1
  std::vector<Batch> closed_;          // batches closed since the last flush, in order
  size_t nclosed_ = 0;                 // (closed_ keeps its buffers between flushes)
  bool use_stream_ = false;
  std::atomic<int> requested_effort_{-1};
  // --codec auto: time spent encoding over the current ~100 ms window.
  int64_t busy_ns_ = 0;
  double busy_fraction_ = -1;  // < 0 until the first window closes
  std::chrono::steady_clock::time_point window_start_{};
  bool codec_sent_ = false;
  int effort_ = 1;
  // Opaque bytes gathered for the next OPAQUE frame.
  std::vector<uint8_t> opaque_;
  // Copies of pages that were not in the pushed bytes (stable addresses until the flush).
  std::deque<std::vector<uint8_t>> staged_;
  size_t nstaged_ = 0;
  std::unordered_map<std::string, uint32_t> block_ids_;
  // Blocks whose pages all go to shard 0 (host pages larger than the target page).
  std::unordered_map<std::string, bool> whole_host_pages_;
  PageCodecCounters counters_;
  StreamStats stats_{/*return_path=*/false};
  // The held stream (hold()): items in stream order, numbered from held_front_; the held
  // pages by (block, index), except pages held twice, which keep their order; the promoted
  // ones waiting to be released; whether the last item framed was a page.
  bool holding_ = false;
  bool package_framed_ = false;  // the main channel's PACKAGED blob went into frames
  std::deque<Held> held_;
  uint64_t held_front_ = 0;
  size_t held_bytes_ = 0;
  std::unordered_map<std::string, std::unordered_map<uint32_t, uint64_t>> held_pages_;
  std::vector<uint64_t> urgent_;
  // Pages asked for before QEMU wrote them: without postcopy-preempt QEMU writes a requested
  // page on this channel, behind what is held, and it goes first when it comes.
  std::unordered_map<std::string, std::unordered_set<uint32_t>> wanted_;
  size_t wanted_count_ = 0;
  bool released_page_last_ = false;
  uint64_t missed_ = 0;
  // The route to the preempt channel (set_preempt_route), and on the preempt channel the
  // block its destination takes a CONTINUE record for: the last record on it named that
  // block, QEMU's own or one routed here.
  PreemptRoute* route_ = nullptr;
  std::string preempt_block_;
  std::vector<std::vector<uint8_t>> routed_;
  std::vector<uint8_t> preempt_eos_;  // QEMU's EOS there, while the main hold may route more
  bool eof_held_ = false;             // main: QEMU's end of the stream is in the hold
  Status forward_preempt(FrameWriter& out);
  void add_routed(FrameWriter& out);
  // Post-copy page bases (set_postcopy_bases): the main channel freezes its caches; the
  // preempt channel encodes its pages against them with its own Encoder (no cache).
  PostcopyBases* bases_ = nullptr;
  bool caches_frozen_ = false;
  std::unique_ptr<encoders::Encoder> postcopy_encoder_;
  Status freeze_caches(FrameWriter& out);
  bool add_postcopy_page(std::string_view block, uint64_t offset, std::span<const uint8_t> page,
                         FrameWriter& out);
  void end_preempt(FrameWriter& out);
  bool whole_host_pages(std::string_view block);
  // The faults whose neighbours go ahead of the held stream (promote(), kTrailPages): pages
  // of block in [from, end), at most `left` more; the held pages that go next, in order.
  struct Trail {
    std::string block;
    uint32_t from = 0, end = 0, left = 0;
  };
  std::vector<Trail> trails_;
  std::vector<uint64_t> next_;
  bool on_trail(const std::string& block, uint32_t index);
  std::atomic<uint64_t> promoted_{0}, held_peak_{0}, followed_{0};
};

// The receiver's codec of one channel: frames in, a byte-valid QEMU stream out. Owned by the
// channel; decode() runs on its pump's thread only, pages_rebuilt() from any thread.
class PageStreamDecoder final : public StreamCodec {
 public:
  // max_cache_bytes: the largest page cache a sender may ask for (it is allocated here);
  // the other limits at their defaults.
  explicit PageStreamDecoder(size_t max_cache_bytes)
      : limits_{.max_cache_bytes = max_cache_bytes} {}
  explicit PageStreamDecoder(const DecoderLimits& limits) : limits_(limits) {}
  ~PageStreamDecoder() override;

  Status encode(std::span<const uint8_t>, FrameWriter&) override {
    return Status(ErrorCode::kInternal, "a receiver's codec does not encode");
  }
  Status finish(FrameWriter&) override { return Status::ok(); }
  Status decode(dataplane::FrameType type, std::span<const uint8_t> payload,
                ByteQueue& out) override;

  uint64_t pages_rebuilt() const { return pages_.load(std::memory_order_relaxed); }
  // The session's frozen page caches (postcopy_bases.h), shared by its channels' decoders:
  // the main channel's publishes them at CACHES_FROZEN, the preempt channel's decodes
  // POSTCOPY_PAGE frames against them. Before the pump starts.
  void set_postcopy_bases(PostcopyBases* bases) { bases_ = bases; }

 private:
  Status read_codec(std::span<const uint8_t> payload);
  Status freeze_caches(std::span<const uint8_t> payload);
  Status decode_postcopy_page(std::span<const uint8_t> payload, ByteQueue& out);
  uint32_t block_id(std::string_view name);

  DecoderLimits limits_;
  // As the CODEC frame announced them.
  unsigned max_pages_ = 0;
  uint64_t zstd_window_ = 0;  // bytes; 0: no zstd blocks
  uint32_t lzma_dict_ = 0;    // bytes; 0: no LZMA2 blocks
  // One per shard (CODEC frame).
  std::vector<std::unique_ptr<encoders::Decoder>> decoders_;
  // Per shard, created on their first block.
  std::vector<std::unique_ptr<encoders::StreamDecompressor>> zstd_streams_;
  std::vector<std::unique_ptr<encoders::StreamDecompressor>> lzma_streams_;
  std::vector<uint8_t> records_;
  size_t page_size_ = 0;
  std::unique_ptr<qemu::StreamRebuilder> rebuilder_;
  std::vector<uint8_t> pages_buf_;
  std::vector<uint64_t> keys_;
  std::vector<encoders::Form> forms_;
  std::unordered_map<std::string, uint32_t> block_ids_;
  std::atomic<uint64_t> pages_{0};
  PostcopyBases* bases_ = nullptr;
  bool caches_frozen_ = false;
  std::unique_ptr<encoders::Decoder> postcopy_decoder_;  // no cache: bases come from bases_
  std::vector<uint8_t> postcopy_page_;
};

// The CODEC frame's fields (grammar above), for ferry send and for tests that forge one.
struct CodecAnnouncement {
  uint32_t page_size = 4096;
  uint64_t cache_bytes = 0;
  unsigned shards = 1;
  encoders::CachePolicy cache_policy = encoders::kDefaultCachePolicy;
  unsigned max_pages = 64;
  int zstd_window_log = encoders::kStreamWindowLog;  // 0: no zstd blocks
  uint32_t lzma_dict = 0;                            // 0: no LZMA2 blocks
};
inline constexpr size_t kCodecPayloadSize = 22;
inline constexpr uint8_t kCodecVersion = 7;
void encode_codec(const CodecAnnouncement& c, uint8_t out[kCodecPayloadSize]);

// The page key both ends derive: block ids are numbered in order of first appearance in
// PAGES frames, so sender and receiver agree without sending a table.
inline uint64_t page_key(uint32_t block_id, uint32_t page_index) {
  return (uint64_t{block_id} << 40) | page_index;
}

}  // namespace ferry::pipeline
