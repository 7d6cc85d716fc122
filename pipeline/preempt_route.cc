// pipeline/preempt_route.cc — see preempt_route.h.
#include "pipeline/preempt_route.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <string_view>

#include "common/endian.h"

namespace ferry::pipeline {

PreemptRoute::PreemptRoute() : wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

PreemptRoute::~PreemptRoute() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void PreemptRoute::open() {
  std::lock_guard lk(mu_);
  if (!closed_) open_ = true;
}

// The eventfd is written and read under the lock, with pending_: once take() cleared
// pending_, the fd is not readable (a sleeping pump must not wake for nothing, over and over).
void PreemptRoute::wake_locked() {
  pending_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

bool PreemptRoute::push(std::vector<uint8_t> record) {
  std::lock_guard lk(mu_);
  if (!open_ || closed_) return false;
  queue_.push_back(std::move(record));
  routed_.fetch_add(1, std::memory_order_relaxed);
  wake_locked();
  return true;
}

void PreemptRoute::main_holding() {
  std::lock_guard lk(mu_);
  main_holding_ = true;
}

void PreemptRoute::main_done() {
  std::lock_guard lk(mu_);
  if (main_done_) return;
  main_done_ = true;
  wake_locked();
}

bool PreemptRoute::waiting_for_main() const {
  std::lock_guard lk(mu_);
  return main_holding_ && !main_done_;
}

void PreemptRoute::take(std::vector<std::vector<uint8_t>>& out) {
  std::lock_guard lk(mu_);
  take_locked(out);
}

void PreemptRoute::take_locked(std::vector<std::vector<uint8_t>>& out) {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
  for (auto& r : queue_) out.push_back(std::move(r));
  queue_.clear();
  pending_.store(false, std::memory_order_release);
}

void PreemptRoute::close(std::vector<std::vector<uint8_t>>& out) {
  std::lock_guard lk(mu_);
  closed_ = true;
  open_ = false;
  take_locked(out);
}

namespace {
constexpr uint64_t kZeroFlag = 0x02, kPageFlag = 0x08;  // RAM_SAVE_FLAG_*
}  // namespace

size_t write_page_record(uint8_t* dst, std::string_view block, uint64_t offset, const uint8_t* data,
                         size_t page_size) {
  store_be64(dst, offset | (data ? kPageFlag : kZeroFlag));
  dst[8] = static_cast<uint8_t>(block.size());
  std::memcpy(dst + 9, block.data(), block.size());
  if (data) {
    std::memcpy(dst + 9 + block.size(), data, page_size);
  } else {
    dst[9 + block.size()] = 0;  // the fill byte
  }
  return page_record_size(block, data, page_size);
}

std::vector<uint8_t> page_record(std::string_view block, uint64_t offset, const uint8_t* data,
                                 size_t page_size) {
  std::vector<uint8_t> r(page_record_size(block, data, page_size));
  write_page_record(r.data(), block, offset, data, page_size);
  return r;
}

std::optional<PageRecordView> read_page_record(std::span<const uint8_t> record) {
  if (record.size() < 10 || record.size() < 9u + record[8] + 1) return std::nullopt;
  const uint64_t word = load_be64(record.data());
  const uint64_t flags = word & (kZeroFlag | kPageFlag);
  PageRecordView v;
  v.block = {reinterpret_cast<const char*>(record.data()) + 9, record[8]};
  v.offset = word & ~(kZeroFlag | kPageFlag);
  const auto rest = record.subspan(9u + record[8]);
  if (flags == kPageFlag) {
    v.page = rest;
  } else if (flags != kZeroFlag || rest.size() != 1) {
    return std::nullopt;
  }
  return v;
}

}  // namespace ferry::pipeline
