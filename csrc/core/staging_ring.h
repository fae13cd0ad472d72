// The staging ring: a bounded set of reusable batch buffers ("slots").
//
// A slot is claimed while ferry fills it and hands it over, and is reused only after the
// claim is released *and* the buffer reports that nothing else can still read it (the
// user's tensors viewing it died, a device copy from it completed). When every slot is
// still in use (a user holding many batches), acquire() returns a fresh untracked buffer
// instead of waiting: held batches are the user's memory, as with torch; the ring's own
// footprint stays bounded by its capacity.
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
};

using BufferFactory = std::function<std::shared_ptr<Buffer>(size_t nbytes)>;

class StagingRing {
 public:
  // capacity 0: no reuse at all, every acquire() allocates (used where another allocator,
  // such as torch's pinned-memory cache, already tracks reuse safely).
  StagingRing(size_t capacity, BufferFactory factory);

  // A claimed buffer of at least `nbytes` bytes. Never blocks on other claims.
  std::shared_ptr<Buffer> acquire(size_t nbytes);

  // Returns the claim on `buffer`; no-op for a buffer the ring does not track.
  void release(const Buffer* buffer);

  size_t capacity() const { return capacity_; }
  size_t slots() const;            // tracked buffers
  size_t bytes() const;            // their total size
  uint64_t untracked_allocations() const;

 private:
  struct Slot {
    std::shared_ptr<Buffer> buffer;
    bool claimed;
  };

  const size_t capacity_;
  const BufferFactory factory_;
  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
  size_t allocating_ = 0;  // new slots being allocated outside the lock
  uint64_t untracked_ = 0;
};

}  // namespace ferry
