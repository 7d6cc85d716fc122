// pipeline/preempt_route.h — held pages the destination asks for, handed from the main
// channel's codec to the postcopy-preempt channel's (issue 19).
//
// In post-copy with a held stream (PumpOptions::postcopy_hold) a page the destination asks
// for is often already held: QEMU wrote it on the main channel, and ferry has not framed it
// yet. Framed on the main link it waits behind that link's queue (~35 ms at 30 Mbit/s,
// measured); on the preempt link, which carries only requested pages, it does not. So the
// main channel's codec hands such a page over as a complete QEMU record, and the preempt
// channel's codec puts it into its own stream between two of QEMU's records. The destination
// QEMU loads it like any page QEMU sent there. Every page still reaches it once: the main
// stream no longer has it, and QEMU does not send a page again that it already wrote.
//
// Thread safety: push() from the main channel's pump thread, the rest from the preempt
// channel's; any thread may read the counters.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace ferry::pipeline {

class PreemptRoute {
 public:
  PreemptRoute();
  ~PreemptRoute();
  PreemptRoute(const PreemptRoute&) = delete;
  PreemptRoute& operator=(const PreemptRoute&) = delete;

  // An eventfd, readable while records wait (the preempt channel's pump watches it).
  int wake_fd() const { return wake_fd_; }

  // Preempt channel's codec: its stream takes records from now on.
  void open();
  // Main channel's codec: one record (QEMU's bytes: be64 offset|flags, block id, payload) for
  // the preempt stream. False when that stream does not take records (not open yet, or
  // ended): the page then stays in the main stream.
  bool push(std::vector<uint8_t> record);
  // Preempt channel's codec: whether records wait (cheap), and the records pushed since the
  // last take(), in order (appended to out).
  bool pending() const { return pending_.load(std::memory_order_acquire); }
  void take(std::vector<std::vector<uint8_t>>& out);
  // Preempt channel's codec, at the end of its stream (QEMU's EOS, or its connection closed):
  // no more records; the last ones are appended to out, to go before the end.
  void close(std::vector<std::vector<uint8_t>>& out);

  // Main channel's codec: it holds QEMU's stream (so pages may come until main_done()), and
  // later: everything it held is framed, QEMU's end included (no more pages come).
  void main_holding();
  void main_done();
  // Preempt channel's codec: QEMU ended its preempt stream (its EOS), but a page may still
  // come from the main channel's hold. QEMU 7.2's destination reads the preempt channel
  // until that EOS before it completes, so the EOS waits until main_done().
  bool waiting_for_main() const;

  // Records handed over (pages that went on the preempt link).
  uint64_t routed() const { return routed_.load(std::memory_order_relaxed); }

 private:
  void wake_locked();
  void take_locked(std::vector<std::vector<uint8_t>>& out);

  int wake_fd_ = -1;
  mutable std::mutex mu_;
  bool open_ = false, closed_ = false;
  bool main_holding_ = false, main_done_ = false;
  std::vector<std::vector<uint8_t>> queue_;
  std::atomic<bool> pending_{false};
  std::atomic<uint64_t> routed_{0};
};

// The record of one page as QEMU writes it, naming its block (no CONTINUE): PAGE with the
// page's bytes, or ZERO (fill 0) when data is null.
std::vector<uint8_t> page_record(std::string_view block, uint64_t offset, const uint8_t* data,
                                 size_t page_size);
// The same into dst (page_record_size() bytes); returns its length.
inline size_t page_record_size(std::string_view block, const uint8_t* data, size_t page_size) {
  return 8 + 1 + block.size() + (data ? page_size : 1);
}
size_t write_page_record(uint8_t* dst, std::string_view block, uint64_t offset, const uint8_t* data,
                         size_t page_size);
// A page_record() read back: its block, offset and page (empty for ZERO); nullopt for
// anything else.
struct PageRecordView {
  std::string_view block;
  uint64_t offset = 0;
  std::span<const uint8_t> page;
};
std::optional<PageRecordView> read_page_record(std::span<const uint8_t> record);

}  // namespace ferry::pipeline
