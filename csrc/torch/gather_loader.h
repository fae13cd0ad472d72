// The native gather as torch sees it: columns have dtypes and row shapes, and a batch is
// handed over as one tensor per column, all views of the batch's staging slot.
// Not thread-safe: one consumer thread (the iterator's) calls submit/next/close.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <vector>

#include "../core/gather_pipeline.h"
#include "../core/memory_budget.h"
#include "device_transfer.h"

namespace ferry {

struct ColumnSpec {
  at::ScalarType dtype;
  std::vector<int64_t> row_shape;
};

struct GatherOptions {
  size_t num_threads = 1;
  size_t max_in_flight = 2;
  bool pinned = false;     // page-locked slots (torch's caching host allocator)
  bool in_order = true;
  bool unbatched = false;  // batch_size=None: each "batch" is one sample, no batch dim
  // Batches go to this device: the gather thread that filled a (page-locked) slot starts
  // its copy on the device's copy stream; the slot is reused once the copy completed.
  std::optional<c10::Device> device;
  std::shared_ptr<MemoryBudget> budget;  // for page-locked slots; null: not limited
};

struct DeliveredBatch {
  int64_t seq;
  std::vector<int64_t> indices;
  std::vector<at::Tensor> columns;  // empty when the batch failed; on the device if any
  int64_t rejected_position;        // see Batch
  std::string error;
  double gather_seconds;
  double transfer_seconds;  // starting the device copy (0 without a device)
};

class GatherLoader {
 public:
  GatherLoader(IndexPlan plan, std::vector<std::vector<StridedArray>> leaves,
               std::vector<ColumnSpec> columns, GatherOptions options);

  int64_t submit(std::vector<int64_t> indices) { return pipeline_->submit(std::move(indices)); }
  // Blocks until a batch is ready or the timeout passes; callers release the GIL.
  std::optional<Batch> wait(double timeout_s) { return pipeline_->next(timeout_s); }
  // Builds the column tensors of a finished batch and returns its slot's claim.
  DeliveredBatch deliver(Batch batch);
  void close() { pipeline_->close(); }

  int64_t in_flight() const { return pipeline_->in_flight(); }
  const GatherOptions& options() const { return options_; }
  const StagingRing& ring() const { return *ring_; }
  const DeviceTransfer* transfer() const { return transfer_.get(); }  // null: no device

 private:
  std::vector<at::Tensor> column_views(const Batch& batch) const;

  std::vector<ColumnSpec> columns_;
  GatherOptions options_;
  std::shared_ptr<StagingRing> ring_;
  std::unique_ptr<DeviceTransfer> transfer_;  // with a device
  std::unique_ptr<GatherPipeline> pipeline_;  // last: its threads use the members above
};

}  // namespace ferry
