// pipeline/stream_codec.h — the hook through which a channel's bytes become frames other
// than OPAQUE and back. The dataplane does not parse QEMU bytes (DESIGN.md §2): pipeline/
// (page_stream.h) plugs in a StreamCodec built from qemu-channel (parser, rebuilder) and
// encoders; without one the pump forwards QEMU's bytes as OPAQUE frames, copy-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/byte_queue.h"
#include "common/status.h"
#include "dataplane/protocol.h"

namespace ferry::pipeline {

// Where a FrameWriter's frames go: the pump's frame buffers (channel_pump.cc).
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // Room for n more bytes, contiguous; never fails (the pump keeps buffers in reserve and
  // spills to memory when a codec outruns them). Valid until commit().
  virtual uint8_t* reserve(size_t n) = 0;
  virtual void commit(size_t n) = 0;
  // Bytes already waiting for the link.
  virtual size_t backlog() const = 0;
};

// Appends whole frames to the pump's output (or a byte queue, for tests and ferry inspect),
// numbering them. Valid during one StreamCodec call.
class FrameWriter {
 public:
  FrameWriter(ByteQueue& queue, uint64_t& seq, uint64_t& frames)
      : queue_(&queue), seq_(seq), frames_(frames) {}
  FrameWriter(FrameSink& sink, uint64_t& seq, uint64_t& frames)
      : sink_(&sink), seq_(seq), frames_(frames) {}

  // Room for a payload of at most max_payload (<= kMaxPayload) bytes; fill a prefix of it and
  // call end_frame() before any other call.
  uint8_t* begin_frame(size_t max_payload) {
    const size_t n = dataplane::kFrameHeaderSize + max_payload;
    slot_ = queue_ ? queue_->reserve(n) : sink_->reserve(n);
    return slot_ + dataplane::kFrameHeaderSize;
  }
  void end_frame(dataplane::FrameType type, size_t payload_len) {
    dataplane::encode_frame_header(type, seq_++, slot_ + dataplane::kFrameHeaderSize,
                                   static_cast<uint32_t>(payload_len), slot_);
    if (queue_) {
      queue_->commit(dataplane::kFrameHeaderSize + payload_len);
    } else {
      sink_->commit(dataplane::kFrameHeaderSize + payload_len);
    }
    ++frames_;
  }
  // Bytes already waiting for the link (for a codec that adapts its effort to the link).
  size_t backlog() const { return queue_ ? queue_->size() : sink_->backlog(); }

 private:
  ByteQueue* queue_ = nullptr;
  FrameSink* sink_ = nullptr;
  uint64_t& seq_;
  uint64_t& frames_;
  uint8_t* slot_ = nullptr;
};

// One per channel and side, used by the pump's thread only.
class StreamCodec {
 public:
  virtual ~StreamCodec() = default;
  // Sender: the next bytes QEMU wrote, in order; write frames for them (any bytes the codec
  // cannot yet frame stay inside it until the next call).
  virtual Status encode(std::span<const uint8_t> bytes, FrameWriter& out) = 0;
  // Sender: QEMU closed the stream; write whatever is still held.
  virtual Status finish(FrameWriter& out) = 0;
  // Receiver: one frame (OPAQUE, CODEC, PAGES, CACHES_FROZEN or POSTCOPY_PAGE) in link
  // order; append the QEMU bytes it stands for to out.
  virtual Status decode(dataplane::FrameType type, std::span<const uint8_t> payload,
                        ByteQueue& out) = 0;

  // Sender, post-copy (issue 19): ferry send holds QEMU's stream, parsed, in memory; the
  // link gets it at its own pace through release(), and a page the destination asks for that
  // is still held goes out ahead of the rest. For a page not held, QEMU 7.2's migration
  // thread must answer, which it does only after its current write to the main channel
  // ended: the pump then takes more of QEMU's stream into the hold (requests_missed()). A
  // codec that cannot hold returns false and frames as before.
  virtual bool hold() { return false; }
  // Bytes held: the stream taken from QEMU and not framed yet.
  virtual size_t held_bytes() const { return 0; }
  // Sender: QEMU's post-copy package (the device state, then RUN) went into frames: the
  // destination resumes once it has them, and asks for pages at once.
  virtual bool postcopy_package_framed() const { return false; }
  // Frames the held stream in order, about `bytes` of it (whole items), after every page
  // promoted since the last call (none: only those).
  virtual Status release(size_t bytes, FrameWriter& out) {
    (void)bytes;
    (void)out;
    return Status::ok();
  }
  // The destination asked for [start, start + length) of block (a return-path REQ_PAGES):
  // its pages still held are released first.
  virtual void promote(std::string_view block, uint64_t start, uint64_t length) {
    (void)block;
    (void)start;
    (void)length;
  }
  // Requests promote() found a page of not held: QEMU has yet to write it (or it is on its
  // way already), so QEMU's blocked write must end.
  virtual uint64_t requests_missed() const { return 0; }

  // Sender: an fd, readable while frames wait that did not come from this channel's QEMU
  // (the preempt channel's: pages another channel's hold handed over, preempt_route.h), or
  // -1. The pump watches it and calls write_routed().
  virtual int wake_fd() const { return -1; }
  virtual Status write_routed(FrameWriter& out) {
    (void)out;
    return Status::ok();
  }
};

}  // namespace ferry::pipeline
