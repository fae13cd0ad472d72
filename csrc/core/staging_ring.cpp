#include "staging_ring.h"

#include <atomic>

#include "check.h"

namespace ferry {

StagingRing::StagingRing(size_t capacity, BufferFactory factory)
    : capacity_(capacity), factory_(std::move(factory)) {
  FERRY_CHECK(static_cast<bool>(factory_), "StagingRing needs a buffer factory");
  slots_.reserve(capacity);
}

std::shared_ptr<Buffer> StagingRing::acquire(size_t nbytes) {
  std::unique_lock<std::mutex> lock(mutex_);
  Slot* too_small = nullptr;
  for (Slot& s : slots_) {
    if (s.claimed || s.buffer->in_use()) continue;
    if (s.buffer->size() >= nbytes) {
      // Whoever last read this memory released it with a release-ordered decrement;
      // order our coming writes after their reads.
      std::atomic_thread_fence(std::memory_order_acquire);
      s.claimed = true;
      return s.buffer;
    }
    too_small = &s;
  }
  if (slots_.size() < capacity_) {
    auto buffer = factory_(nbytes);
    FERRY_CHECK(buffer && buffer->size() >= nbytes, "buffer factory returned too little memory");
    slots_.push_back({buffer, true});
    return buffer;
  }
  if (too_small != nullptr) {  // a free slot too small for this batch: grow it
    std::atomic_thread_fence(std::memory_order_acquire);
    too_small->buffer = factory_(nbytes);
    FERRY_CHECK(too_small->buffer && too_small->buffer->size() >= nbytes,
                "buffer factory returned too little memory");
    too_small->claimed = true;
    return too_small->buffer;
  }
  ++untracked_;
  lock.unlock();
  auto buffer = factory_(nbytes);
  FERRY_CHECK(buffer && buffer->size() >= nbytes, "buffer factory returned too little memory");
  return buffer;
}

void StagingRing::release(const Buffer* buffer) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Slot& s : slots_) {
    if (s.buffer.get() == buffer) {
      s.claimed = false;
      return;
    }
  }
}

size_t StagingRing::slots() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return slots_.size();
}

size_t StagingRing::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t total = 0;
  for (const Slot& s : slots_) total += s.buffer->size();
  return total;
}

uint64_t StagingRing::untracked_allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return untracked_;
}

}  // namespace ferry
