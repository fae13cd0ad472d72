// A worker's shared ring (shared_ring.h) mapped into this process from a file descriptor
// (a memfd), and the tensors that live in its slots.
// Worker side: slot_tensor() gives a uint8 tensor over a claimed slot to collate into.
// Consumer side: take() turns the tensor descriptions a worker sent into tensors, either
// views sharing one lease that frees the slot when the last of them dies, or copies (the
// slot is freed at once). The mapping lives as long as any tensor made from it.
// Thread-safe (slot states are atomics; the mapping is immutable).
#pragma once

#include <ATen/ATen.h>
#include <sys/types.h>

#include <memory>
#include <vector>

#include "../core/memory_budget.h"
#include "../core/shared_ring.h"

namespace ferry {

struct TensorRef {
  int64_t offset;  // bytes from the start of the slot
  at::ScalarType dtype;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements, like torch
};

class SharedRingMapping : public std::enable_shared_from_this<SharedRingMapping> {
 public:
  // Makes a ring at byte `offset` (page-aligned) of the file behind `fd`, growing the
  // file as needed, and writes a fresh header. A worker grows by making a larger ring
  // further along the same file; earlier rings stay valid.
  static std::shared_ptr<SharedRingMapping> create(int fd, size_t offset, size_t slot_bytes,
                                                   uint32_t nslots);
  // Maps the ring another process created at `offset` of the file behind `fd`, charged to
  // `budget` (when given) while mapped.
  static std::shared_ptr<SharedRingMapping> attach(
      int fd, size_t offset, const std::shared_ptr<MemoryBudget>& budget = nullptr);
  ~SharedRingMapping();

  SharedRingMapping(const SharedRingMapping&) = delete;
  SharedRingMapping& operator=(const SharedRingMapping&) = delete;

  SharedRingView& ring() { return ring_; }
  // Whether this process mapped the ring. A forked child inherits this object but not
  // the mapping (MADV_DONTFORK): there its addresses may hold the child's own memory,
  // so the child must neither write the header nor unmap them.
  bool mapped_here() const;
  size_t mapped_bytes() const { return bytes_; }

  at::Tensor slot_tensor(uint32_t slot);
  // Gives the memory of every slot not HELD back to the system (its contents are lost):
  // for when no more batches will be taken, while the user may still hold some.
  void release_unheld();
  // `pinned` (with `copy`): the copies are page-locked, from torch's pinned allocator.
  std::vector<at::Tensor> take(uint32_t slot, const std::vector<TensorRef>& refs, bool copy,
                               bool pinned = false);

 private:
  SharedRingMapping(void* base, size_t bytes, SharedRingView ring,
                    std::unique_ptr<BudgetCharge> charge);
  static void* map(int fd, size_t offset, size_t bytes);

  void* base_;
  size_t bytes_;
  SharedRingView ring_;
  pid_t owner_pid_;  // the process that mapped it
  std::unique_ptr<BudgetCharge> charge_;  // counts the mapping (budget, process total)
};

}  // namespace ferry
