#include "gather_loader.h"

#include "tensor_buffer.h"

namespace ferry {

GatherLoader::GatherLoader(IndexPlan plan, std::vector<std::vector<StridedArray>> leaves,
                           std::vector<ColumnSpec> columns, GatherOptions options)
    : columns_(std::move(columns)), options_(options) {
  FERRY_CHECK(!leaves.empty() && leaves.front().size() == columns_.size(),
              "every leaf needs one array per column");
  for (const auto& leaf : leaves) {
    for (size_t c = 0; c < columns_.size(); ++c) {
      FERRY_CHECK(leaf[c].itemsize() == static_cast<int64_t>(c10::elementSize(columns_[c].dtype)),
                  "column ", c, ": array item size does not match its dtype");
      FERRY_CHECK(leaf[c].row_shape() == columns_[c].row_shape, "column ", c,
                  ": array row shape does not match the column's");
    }
  }
  TransferStep step;
  if (options_.device) {
    options_.pinned = true;  // copies from page-locked memory run asynchronously
    transfer_ = std::make_unique<DeviceTransfer>(*options_.device);
    step = [this](Batch& batch) {
      auto copy = std::make_shared<DeviceTransfer::Copy>();
      try {
        transfer_->adopt_device();  // a gather thread: ours
        *copy = transfer_->start(column_views(batch));
      } catch (const std::exception& e) {
        FERRY_FAIL("copying the batch to ", transfer_->device(), " failed: ", e.what());
      }
      static_cast<TensorBuffer&>(*batch.buffer).keep_until(copy->done);
      batch.transfer = std::move(copy);
    };
  }
  // Pinned batches for the user are handed over as they are, and the user may copy them
  // to a device with non_blocking=True: torch's host allocator only makes that safe for
  // blocks it reuses itself, so such slots are fresh from it each time (it caches them).
  // Slots whose batches go to a device never reach the user and are reused; when the
  // device lags, the gather threads wait for its copies rather than pinning more memory.
  const bool user_sees_pinned_slots = options_.pinned && !transfer_;
  const size_t capacity = user_sees_pinned_slots ? 0 : options_.max_in_flight + 2;
  ring_ = std::make_shared<StagingRing>(
      capacity, tensor_buffer_factory(options_.pinned, options_.budget),
      transfer_ ? StagingRing::WhenFull::kWait : StagingRing::WhenFull::kAllocate);
  pipeline_ = std::make_unique<GatherPipeline>(std::move(plan), std::move(leaves),
                                               options_.num_threads, options_.max_in_flight,
                                               ring_, options_.in_order, std::move(step));
}

std::vector<at::Tensor> GatherLoader::column_views(const Batch& batch) const {
  auto& buffer = static_cast<TensorBuffer&>(*batch.buffer);
  std::vector<at::Tensor> out;
  out.reserve(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    std::vector<int64_t> sizes;
    if (!options_.unbatched) sizes.push_back(batch.rows);
    sizes.insert(sizes.end(), columns_[c].row_shape.begin(), columns_[c].row_shape.end());
    out.push_back(buffer.view(batch.layout.offsets[c], columns_[c].dtype, sizes));
  }
  return out;
}

DeliveredBatch GatherLoader::deliver(Batch batch) {
  DeliveredBatch out{batch.seq,
                     std::move(batch.indices),
                     {},
                     batch.rejected_position,
                     std::move(batch.error),
                     batch.gather_seconds,
                     batch.transfer_seconds};
  if (batch.buffer) {
    if (batch.transfer) {
      // The slot stays in use until its copy completed (keep_until), whatever follows.
      pipeline_->release(batch);
      auto copy = std::static_pointer_cast<DeviceTransfer::Copy>(batch.transfer);
      out.columns = transfer_->hand_over(std::move(*copy));
    } else {
      // The views hold the storage: the slot stays in use until they die.
      out.columns = column_views(batch);
      pipeline_->release(batch);
    }
  }
  return out;
}

}  // namespace ferry
