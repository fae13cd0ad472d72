// Copies batches from ordinary host memory (a worker's shared slot, tensors a Python
// worker thread made) to a device: each batch is packed into a page-locked slot of a
// small ring in the calling thread, then copied on the device's copy stream like the
// native gather's batches. Tensors already page-locked by torch skip the packing.
// Not thread-safe: one consumer thread calls to_device().
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "../core/memory_budget.h"
#include "../core/staging_ring.h"
#include "device_transfer.h"

namespace ferry {

class StagedCopy {
 public:
  // `slots`: page-locked slots reused round the ring; with every slot's copy still
  // running, to_device() waits for the oldest to complete.
  StagedCopy(c10::Device device, size_t slots, std::shared_ptr<MemoryBudget> budget = nullptr);

  // The tensors on the device, ready on the calling thread's current stream.
  std::vector<at::Tensor> to_device(const std::vector<at::Tensor>& host);

  const StagingRing& ring() const { return *ring_; }
  const DeviceTransfer& transfer() const { return transfer_; }

 private:
  DeviceTransfer transfer_;
  std::shared_ptr<StagingRing> ring_;
};

}  // namespace ferry
