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
  // Pinned batches go to the user as they are, and the user may copy them to a device
  // with non_blocking=True: torch's host allocator only makes that safe for blocks it
  // reuses itself, so pinned slots are fresh from it each time (it caches them).
  const size_t capacity = options_.pinned ? 0 : options_.max_in_flight + 2;
  ring_ = std::make_shared<StagingRing>(capacity, tensor_buffer_factory(options_.pinned));
  pipeline_ = std::make_unique<GatherPipeline>(std::move(plan), std::move(leaves),
                                               options_.num_threads, options_.max_in_flight,
                                               ring_, options_.in_order);
}

DeliveredBatch GatherLoader::deliver(Batch batch) {
  DeliveredBatch out{batch.seq, std::move(batch.indices), {}, batch.rejected_position,
                     std::move(batch.error), batch.gather_seconds};
  if (batch.buffer) {
    auto& buffer = static_cast<TensorBuffer&>(*batch.buffer);
    out.columns.reserve(columns_.size());
    for (size_t c = 0; c < columns_.size(); ++c) {
      std::vector<int64_t> sizes;
      if (!options_.unbatched) sizes.push_back(batch.rows);
      sizes.insert(sizes.end(), columns_[c].row_shape.begin(), columns_[c].row_shape.end());
      out.columns.push_back(buffer.view(batch.layout.offsets[c], columns_[c].dtype, sizes));
    }
    // The views now hold the storage: the slot stays in use until they die.
    pipeline_->release(batch);
  }
  return out;
}

}  // namespace ferry
