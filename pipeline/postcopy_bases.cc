// pipeline/postcopy_bases.cc — see postcopy_bases.h.
#include "pipeline/postcopy_bases.h"

#include "pipeline/page_stream.h"

namespace ferry::pipeline {

const uint8_t* PostcopyBases::Frozen::base(std::string_view block, uint64_t index) const {
  if (shards.empty() || index > UINT32_MAX) return nullptr;
  const std::string name(block);
  auto id = block_ids.find(name);
  if (id == block_ids.end() || whole_host_pages.contains(name)) return nullptr;
  const encoders::PageCache& cache =
      *shards[encoders::shard_of(index, static_cast<unsigned>(shards.size()))];
  const uint32_t slot = cache.find(page_key(id->second, static_cast<uint32_t>(index)));
  return slot == encoders::PageCache::kNone ? nullptr : cache.data(slot);
}

void PostcopyBases::publish(std::unique_ptr<Frozen> frozen) {
  std::lock_guard lk(mu_);
  if (owned_) return;
  owned_ = std::move(frozen);
  frozen_.store(owned_.get(), std::memory_order_release);
  published_.notify_all();
}

const PostcopyBases::Frozen* PostcopyBases::wait(std::chrono::milliseconds within) {
  std::unique_lock lk(mu_);
  published_.wait_for(lk, within, [&] { return owned_ != nullptr; });
  return owned_.get();
}

}  // namespace ferry::pipeline
