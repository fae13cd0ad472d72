// A staging buffer allocated by torch (plain CPU memory, or page-locked through torch's
// caching host allocator), and the tensors that view one of its columns.
// A TensorBuffer is in use while any tensor viewing it lives, so a batch handed to the
// user keeps its slot until the user's last view of it dies:
// * plain buffers hand out views with storages of their own, each holding a count on the
//   buffer (a count nothing else can raise: Python keeps a storage's refcount up once it
//   has looked at it, which would keep a shared storage "in use" for ever);
// * pinned buffers hand out views of their own storage, so that torch's caching host
//   allocator knows the memory and keeps it for the user's non_blocking copies; they are
//   reused by the ring only when their batches go to a device (the user never sees
//   them); then they stay in use until the device copy from them completed (keep_until).
// Thread-safe: in_use() and wait_for_copies() from the ring's threads, view() and
// keep_until() from the thread that fills or hands over the slot (views_ is atomic, the
// pending copy is under copy_mutex_); the buffer's bytes belong to one slot owner at a time.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "../core/memory_budget.h"
#include "../core/staging_ring.h"

namespace ferry {

class TensorBuffer final : public Buffer, public std::enable_shared_from_this<TensorBuffer> {
 public:
  // Page-locked buffers are charged to `budget` (when given) for as long as they live.
  TensorBuffer(size_t nbytes, bool pinned, const std::shared_ptr<MemoryBudget>& budget = nullptr);

  uint8_t* data() override { return tensor_.data_ptr<uint8_t>(); }
  size_t size() const override { return static_cast<size_t>(tensor_.numel()); }
  bool in_use() const override;
  bool wait_for_copies() override;  // synchronises with keep_until's copy, if any

  // A tensor of `dtype`, `sizes` and `strides` (C-contiguous when none are given) over the
  // bytes at `byte_offset`, which must be a multiple of the item size.
  at::Tensor view(int64_t byte_offset, at::ScalarType dtype, at::IntArrayRef sizes,
                  at::IntArrayRef strides = {});

  // Keeps the buffer in use until `copy_done` (an asynchronous copy out of it) completed.
  void keep_until(std::shared_ptr<const c10::Event> copy_done);

 private:
  std::unique_ptr<BudgetCharge> charge_;  // before tensor_: charged before allocating
  at::Tensor tensor_;  // uint8, one dimension
  const bool pinned_;
  std::atomic<int64_t> views_{0};  // live views of a plain buffer
  mutable std::mutex copy_mutex_;
  mutable std::shared_ptr<const c10::Event> copy_done_;  // dropped once it completed
};

// The factory a StagingRing uses to allocate TensorBuffers.
BufferFactory tensor_buffer_factory(bool pinned, std::shared_ptr<MemoryBudget> budget = nullptr);

}  // namespace ferry
