// dataplane/frame_pool.cc — see frame_pool.h.
#include "dataplane/frame_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ferry::dataplane {

Result<std::unique_ptr<FramePool>> FramePool::create(const FramePoolOptions& options) {
  if (options.frames == 0 || options.frames > (1u << 20) ||
      options.frame_capacity <= kFrameHeaderSize || options.frame_capacity > (1u << 30)) {
    return error(ErrorCode::kInvalidArgument,
                 "frame pool: " + std::to_string(options.frames) + " frames of " +
                     std::to_string(options.frame_capacity) + " bytes is not a valid size");
  }
  // Cache-line aligned buffers: NICs and memcpy both prefer it.
  const size_t stride = (options.frame_capacity + 63) & ~size_t{63};
  const size_t bytes = stride * options.frames;
  // One anonymous mapping: one region to register, and pages stay unbacked until written.
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    return error(ErrorCode::kIo, "frame pool: mmap of " + std::to_string(bytes) +
                                     " bytes failed: " + std::strerror(errno));
  }
  std::unique_ptr<FramePool> pool(new FramePool());
  pool->base_ = static_cast<uint8_t*>(base);
  pool->bytes_ = bytes;
  pool->capacity_ = options.frame_capacity;
  pool->bufs_.resize(options.frames);
  pool->free_.reserve(options.frames);
  for (size_t i = 0; i < options.frames; ++i) {
    FrameBuf& f = pool->bufs_[i];
    f.data = pool->base_ + i * stride;
    f.cap = static_cast<uint32_t>(options.frame_capacity);
    f.pool = pool.get();
    f.index = static_cast<uint32_t>(i);
  }
  // Lowest index handed out first (buffers reused warm).
  for (size_t i = options.frames; i-- > 0;) pool->free_.push_back(&pool->bufs_[i]);
  return pool;
}

std::unique_ptr<FramePool> FramePool::view(FramePool& backing, size_t head, size_t tail) {
  std::unique_ptr<FramePool> v(new FramePool());
  v->backing_ = &backing;
  v->capacity_ = backing.capacity_ - head - tail;
  v->bufs_.resize(backing.bufs_.size());
  for (size_t i = 0; i < v->bufs_.size(); ++i) {
    FrameBuf& f = v->bufs_[i];
    f.data = backing.bufs_[i].data + head;
    f.cap = static_cast<uint32_t>(v->capacity_);
    f.pool = v.get();
    f.index = static_cast<uint32_t>(i);
  }
  return v;
}

FramePool::~FramePool() {
  if (base_) ::munmap(base_, bytes_);
}

}  // namespace ferry::dataplane
