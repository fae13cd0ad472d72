#include "gather_pipeline.h"

#include <chrono>

#include "check.h"
#include "slot_layout.h"

namespace ferry {
namespace {
// Rows copied between two looks at the stop flag: small enough that close() is prompt
// even over slow (disk-backed) arrays, large enough to cost nothing.
constexpr int64_t kRowsPerStopCheck = 64;

// Rows whose loads are started ahead of the row being copied.
constexpr int64_t kPrefetchRows = 2;
}  // namespace

BatchLayout BatchLayout::make(const std::vector<int64_t>& row_bytes, int64_t rows) {
  BatchLayout layout;
  layout.offsets.reserve(row_bytes.size());
  for (int64_t rb : row_bytes) {
    layout.offsets.push_back(layout.total_bytes);
    layout.total_bytes = align_up(layout.total_bytes + rb * rows);
  }
  return layout;
}

GatherPipeline::GatherPipeline(IndexPlan plan, std::vector<std::vector<StridedArray>> leaves,
                               size_t num_threads, size_t max_in_flight,
                               std::shared_ptr<StagingRing> ring, bool in_order,
                               TransferStep transfer)
    : plan_(std::move(plan)),
      leaves_(std::move(leaves)),
      num_threads_(num_threads),
      max_in_flight_(max_in_flight),
      ring_(std::move(ring)),
      in_order_(in_order),
      transfer_(std::move(transfer)) {
  FERRY_CHECK(!leaves_.empty(), "the native gather needs at least one leaf");
  FERRY_CHECK(ring_ != nullptr, "the native gather needs a staging ring");
  FERRY_CHECK(max_in_flight_ > 0, "max_in_flight must be positive");
  for (const auto& col : leaves_.front()) row_bytes_.push_back(col.row_bytes());
  for (const auto& leaf : leaves_) {
    FERRY_CHECK(leaf.size() == row_bytes_.size(), "leaves have different numbers of columns");
    for (size_t c = 0; c < leaf.size(); ++c) {
      FERRY_CHECK(leaf[c].row_bytes() == row_bytes_[c], "column ", c,
                  " has rows of different sizes in different leaves");
    }
  }
  for (const auto& [leaf, rows] : plan_.leaves()) {
    FERRY_CHECK(leaf < static_cast<int32_t>(leaves_.size()), "the index plan names leaf ", leaf,
                " but there are ", leaves_.size(), " leaves");
    for (const auto& col : leaves_[leaf]) {
      FERRY_CHECK(col.rows() == rows, "leaf ", leaf, " has ", rows,
                  " rows in the index plan but an array of ", col.rows());
    }
  }
  pool_ = std::make_unique<ThreadPool>(num_threads, max_in_flight);
}

GatherPipeline::~GatherPipeline() { close(); }

int64_t GatherPipeline::submit(std::vector<int64_t> indices) {
  int64_t seq;
  {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    FERRY_CHECK(!closed_, "the native gather is closed");
    FERRY_CHECK(submitted_ - taken_ < static_cast<int64_t>(max_in_flight_),
                "more than ", max_in_flight_, " batches in flight");
    seq = submitted_++;
  }
  const bool queued = pool_->submit(
      [this, seq, indices = std::move(indices)]() mutable { gather(seq, std::move(indices)); });
  FERRY_CHECK(queued, "the native gather is closed");
  return seq;
}

void GatherPipeline::gather(int64_t seq, std::vector<int64_t> indices) {
  const auto started = std::chrono::steady_clock::now();
  Batch batch;
  batch.seq = seq;
  batch.rows = static_cast<int64_t>(indices.size());
  batch.indices = std::move(indices);
  const std::vector<int64_t>& idx = batch.indices;
  try {
    std::vector<RowRef> refs(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      if (!plan_.resolve(idx[i], &refs[i])) {
        batch.rejected_position = static_cast<int64_t>(i);
        finish(std::move(batch));
        return;
      }
    }
    if (idx.empty()) {  // default_collate([]) raises in torch
      batch.rejected_position = 0;
      finish(std::move(batch));
      return;
    }
    batch.layout = BatchLayout::make(row_bytes_, batch.rows);
    batch.buffer = ring_->acquire(static_cast<size_t>(batch.layout.total_bytes));
    uint8_t* base = batch.buffer->data();
    for (size_t c = 0; c < row_bytes_.size(); ++c) {
      uint8_t* dst = base + batch.layout.offsets[c];
      const int64_t rb = row_bytes_[c];
      for (int64_t i = 0; i < kPrefetchRows && i < batch.rows; ++i) {
        leaves_[refs[i].leaf][c].prefetch_row(refs[i].row);
      }
      for (int64_t i = 0; i < batch.rows; ++i) {
        if (i % kRowsPerStopCheck == 0 && stopping_.load(std::memory_order_relaxed)) {
          ring_->release(batch.buffer.get());
          return;  // nobody waits for it any more
        }
        if (i + kPrefetchRows < batch.rows) {
          const RowRef& ahead = refs[i + kPrefetchRows];
          leaves_[ahead.leaf][c].prefetch_row(ahead.row);
        }
        const RowRef& r = refs[i];
        leaves_[r.leaf][c].copy_row(r.row, dst + i * rb);
      }
    }
    const auto gathered = std::chrono::steady_clock::now();
    batch.gather_seconds = std::chrono::duration<double>(gathered - started).count();
    if (transfer_) {
      transfer_(batch);
      batch.transfer_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - gathered).count();
    }
  } catch (const std::exception& e) {
    if (batch.buffer) ring_->release(batch.buffer.get());
    batch.buffer.reset();
    batch.transfer.reset();
    batch.error = e.what();
  }
  if (batch.gather_seconds == 0) {
    batch.gather_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
  finish(std::move(batch));
}

void GatherPipeline::finish(Batch batch) {
  {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    if (closed_) {
      if (batch.buffer) ring_->release(batch.buffer.get());
      return;
    }
    const int64_t seq = batch.seq;
    ready_.emplace(seq, std::move(batch));
  }
  sync_->ready_cv.notify_all();
}

std::optional<Batch> GatherPipeline::next(double timeout_s) {
  std::unique_lock<std::mutex> lock(sync_->mutex);
  FERRY_CHECK(!closed_, "the native gather is closed");
  FERRY_CHECK(taken_ < submitted_, "next() called with no batch in flight");
  auto have_one = [&] {
    return closed_ || (in_order_ ? ready_.count(next_seq_) > 0 : !ready_.empty());
  };
  if (timeout_s > 0) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    if (!sync_->ready_cv.wait_until(lock, deadline, have_one)) return std::nullopt;
  } else {
    sync_->ready_cv.wait(lock, have_one);
  }
  FERRY_CHECK(!closed_, "the native gather was closed while waiting for a batch");
  auto it = in_order_ ? ready_.find(next_seq_) : ready_.begin();
  Batch batch = std::move(it->second);
  ready_.erase(it);
  ++taken_;
  if (in_order_) ++next_seq_;
  return batch;
}

void GatherPipeline::release(const Batch& batch) {
  if (batch.buffer) ring_->release(batch.buffer.get());
}

void GatherPipeline::close() {
  if (pool_->forked()) {  // see ThreadPool::forked(): touch no lock, join nothing
    pool_->shutdown();
    (void)sync_.release();  // leaked on purpose, see sync_
    return;
  }
  std::lock_guard<std::mutex> closing(sync_->close_mutex);
  {
    std::lock_guard<std::mutex> lock(sync_->mutex);
    if (closed_) return;
    closed_ = true;
    for (auto& [seq, batch] : ready_) release(batch);
    ready_.clear();
  }
  stopping_.store(true);
  sync_->ready_cv.notify_all();
  pool_->shutdown();
}

int64_t GatherPipeline::in_flight() const {
  std::lock_guard<std::mutex> lock(sync_->mutex);
  return submitted_ - taken_;
}

}  // namespace ferry
