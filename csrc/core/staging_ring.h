// The staging ring: a bounded set of reusable batch buffers ("slots").
//
// A slot is claimed while ferry fills it and hands it over, and is reused only after the
// claim is released *and* the buffer reports that nothing else can still read it (the
// user's tensors viewing it died, a device copy from it completed). When every slot is
// still in use, what acquire() does depends on who keeps them:
// * the user (a user holding many batches: WhenFull::kAllocate) -> a fresh untracked
//   buffer instead of waiting: held batches are the user's memory, as with torch; the
//   ring's own footprint stays bounded by its capacity;
// * only ferry's asynchronous copies (slots the user never sees: WhenFull::kWait) -> it
//   waits for the oldest released slot's copies to complete, so that a host running ahead
//   of a slow device is held back instead of page-locking more and more memory. (With
//   every slot claimed there is nothing to wait for: such a ring needs more slots than
//   it has claimers at once, or it allocates as kAllocate does.)
// Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace ferry {

class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual uint8_t* data() = 0;
  virtual size_t size() const = 0;
  // True while memory of this buffer may still be read from outside the ring.
  virtual bool in_use() const = 0;
  // Blocks until the asynchronous copies out of this buffer completed; false for a buffer
  // that does not know of its copies (it cannot be waited for).
  virtual bool wait_for_copies() { return false; }
};

using BufferFactory = std::function<std::shared_ptr<Buffer>(size_t nbytes)>;

class StagingRing {
 public:
  enum class WhenFull { kAllocate, kWait };

  // capacity 0: no reuse at all, every acquire() allocates (used where another allocator,
  // such as torch's pinned-memory cache, already tracks reuse safely).
  StagingRing(size_t capacity, BufferFactory factory, WhenFull when_full = WhenFull::kAllocate);

  // A claimed buffer of at least `nbytes` bytes. Never blocks on other claims; with
  // kWait, may block on a released slot's copies (then reuses it).
  std::shared_ptr<Buffer> acquire(size_t nbytes);

  // Returns the claim on `buffer`; no-op for a buffer the ring does not track.
  void release(const Buffer* buffer);

  size_t capacity() const { return capacity_; }
  size_t slots() const;            // tracked buffers
  size_t bytes() const;            // their total size
  uint64_t untracked_allocations() const;
  uint64_t copy_waits() const;  // times acquire() waited for a slot's copies (kWait)

 private:
  struct Slot {
    std::shared_ptr<Buffer> buffer;
    bool claimed;
    uint64_t last_claim;  // when it was last claimed, in claims: the oldest is waited on
  };

  const size_t capacity_;
  const BufferFactory factory_;
  const WhenFull when_full_;
  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
  size_t allocating_ = 0;  // new slots being allocated outside the lock
  uint64_t claims_ = 0;
  uint64_t untracked_ = 0;
  uint64_t copy_waits_ = 0;
};

}  // namespace ferry
