// pipeline/postcopy_bases.h — the main channel's page caches, frozen where QEMU's post-copy
// package begins, as the bases of the pages the postcopy-preempt channel carries (issue 19).
//
// After the switch the guest runs on the destination and stops on every page it touches that
// has not arrived; those pages go on the preempt link, and their bytes are what it waits for.
// Most were sent in an earlier pass and changed little since: as same/delta records against
// that copy they are a fraction of a page. The copy is in the main channel's caches at both
// ends, but the main channel's codec updates them on another thread, and the two links deliver
// in no agreed order. So at the package the main channel's codec freezes its caches (a
// CACHES_FROZEN frame freezes the receiver's at the same record) and publishes them here:
//   - both ends' caches then stay exactly as they were; the main stream's later pages are
//     still encoded against them (QEMU sends each page once after the switch: a cache update
//     would not be used again);
//   - the preempt channel's codec reads them from its own thread, and encodes (or decodes) a
//     page against the frozen copy, or without a base when there is none.
// The destination asks for pages only after it loaded the package, which comes after the
// CACHES_FROZEN frame: the receiver's caches are published by then. The sender's preempt
// codec sends QEMU's pages as they are until its side is published.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "encoders/page_cache.h"

namespace ferry::pipeline {

class PostcopyBases {
 public:
  // The main channel's caches, read only from publish() on.
  struct Frozen {
    size_t page_size = 0;
    std::vector<const encoders::PageCache*> shards;       // by shard
    std::unordered_map<std::string, uint32_t> block_ids;  // as in the page keys
    // Blocks loaded a whole host page at a time (shard 0, in order): no base.
    std::unordered_set<std::string> whole_host_pages;
    // The frozen copy of page `index` of `block`, or null.
    const uint8_t* base(std::string_view block, uint64_t index) const;
  };

  // Main channel's codec, once: caches that will not change any more.
  void publish(std::unique_ptr<Frozen> frozen);
  // The frozen caches, or null before publish().
  const Frozen* frozen() const { return frozen_.load(std::memory_order_acquire); }
  // As frozen(), waiting up to `within` for publish().
  const Frozen* wait(std::chrono::milliseconds within);

 private:
  std::mutex mu_;
  std::condition_variable published_;
  std::unique_ptr<Frozen> owned_;
  std::atomic<const Frozen*> frozen_{nullptr};
};

}  // namespace ferry::pipeline
