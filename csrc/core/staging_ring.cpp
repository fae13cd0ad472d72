#include "staging_ring.h"

#include <atomic>

#include "check.h"

namespace ferry {

StagingRing::StagingRing(size_t capacity, BufferFactory factory, WhenFull when_full)
    : capacity_(capacity), factory_(std::move(factory)), when_full_(when_full) {
  FERRY_CHECK(static_cast<bool>(factory_), "StagingRing needs a buffer factory");
  slots_.reserve(capacity);
}

std::shared_ptr<Buffer> StagingRing::acquire(size_t nbytes) {
  // Decide under the lock, allocate (or wait) outside it: an allocation can be slow
  // (page-locked memory) and must not stall the other threads' acquire() and release().
  enum class Plan { kNewSlot, kGrowSlot, kUntracked } plan;
  size_t grow_index = 0;
  const Buffer* waited_for = nullptr;  // the slot (and its claim) last waited for
  uint64_t waited_claim = 0;
  for (;;) {
    std::shared_ptr<Buffer> oldest_busy;  // released, but its copies not complete
    {
      std::lock_guard<std::mutex> lock(mutex_);
      bool have_small = false;
      const Slot* oldest = nullptr;
      for (size_t i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.claimed) continue;
        if (s.buffer->in_use()) {
          if (oldest == nullptr || s.last_claim < oldest->last_claim) oldest = &s;
          continue;
        }
        if (s.buffer->size() >= nbytes) {
          // Whoever last read this memory dropped it with a release-ordered decrement;
          // order our coming writes after their reads.
          std::atomic_thread_fence(std::memory_order_acquire);
          s.claimed = true;
          s.last_claim = ++claims_;
          return s.buffer;
        }
        have_small = true;
        grow_index = i;
      }
      if (slots_.size() + allocating_ < capacity_) {
        plan = Plan::kNewSlot;
        ++allocating_;
      } else if (have_small) {
        plan = Plan::kGrowSlot;
        slots_[grow_index].claimed = true;  // ours while we grow it
        slots_[grow_index].last_claim = ++claims_;
      } else if (when_full_ == WhenFull::kWait && oldest != nullptr &&
                 !(oldest->buffer.get() == waited_for && oldest->last_claim == waited_claim)) {
        // (the same slot and claim, still in use after its copies completed: something
        // else keeps it, and waiting again would spin)
        oldest_busy = oldest->buffer;
        waited_for = oldest->buffer.get();
        waited_claim = oldest->last_claim;
        ++copy_waits_;
      } else {
        plan = Plan::kUntracked;
        ++untracked_;
      }
    }
    if (!oldest_busy) break;
    // Copies complete in the order they were queued: the oldest slot is free soonest.
    // Then look again (another thread may have taken it). A buffer that cannot be waited
    // for is allocated around.
    if (!oldest_busy->wait_for_copies()) {
      std::lock_guard<std::mutex> lock(mutex_);
      plan = Plan::kUntracked;
      ++untracked_;
      break;
    }
  }
  std::shared_ptr<Buffer> buffer;
  try {
    buffer = factory_(nbytes);
    FERRY_CHECK(buffer && buffer->size() >= nbytes, "buffer factory returned too little memory");
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (plan == Plan::kNewSlot) --allocating_;
    if (plan == Plan::kGrowSlot) slots_[grow_index].claimed = false;
    throw;
  }
  if (plan == Plan::kUntracked) return buffer;
  std::lock_guard<std::mutex> lock(mutex_);
  if (plan == Plan::kNewSlot) {
    --allocating_;
    slots_.push_back({buffer, true, ++claims_});
  } else {
    std::atomic_thread_fence(std::memory_order_acquire);
    slots_[grow_index].buffer = buffer;  // slots are never removed: the index still holds
  }
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

uint64_t StagingRing::copy_waits() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return copy_waits_;
}

}  // namespace ferry
