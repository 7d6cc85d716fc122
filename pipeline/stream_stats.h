// pipeline/stream_stats.h — a StreamTap (dataplane/channel_pump.h) that runs the QEMU stream
// parser over the bytes a ferry forwards, to count pages by class and return-path messages
// for --stats-json and progress. Counting only: the bytes are forwarded whatever it finds.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/channel_pump.h"
#include "qemu-channel/stream_parser.h"

namespace ferry::pipeline {

class StreamStats final : public dataplane::StreamTap {
 public:
  // return_path: the bytes are the destination's return path; otherwise the role (main,
  // multifd, preempt) is guessed from the first bytes.
  explicit StreamStats(bool return_path);

  void on_bytes(std::span<const uint8_t> bytes) noexcept override;
  void on_end() noexcept override;

  // Safe to read from any thread while the pump runs.
  std::atomic<uint64_t> zero{0}, normal{0}, xbzrle{0}, compressed{0};
  std::atomic<uint64_t> rp_messages{0}, commands{0}, multifd_packets{0};

  // After the pump ended (pump thread joined):
  const char* role() const { return role_known_ ? qemu::channel_role_name(role_) : "none"; }
  // The parser stopped counting here (pass-through or a parse error), or "".
  const std::string& note() const { return note_; }

 private:
  void begin();
  void feed(std::span<const uint8_t> bytes);

  bool return_path_;
  bool role_known_ = false;
  qemu::ChannelRole role_ = qemu::ChannelRole::kMain;
  std::vector<uint8_t> head_;  // first bytes, until the role is known
  std::unique_ptr<qemu::StreamParser> parser_;
  bool stopped_ = false;
  std::string note_;
};

}  // namespace ferry::pipeline
