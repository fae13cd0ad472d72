// The native gather: threads copy the rows of each submitted batch of dataset indices
// from array-backed storage straight into a staging slot, one contiguous buffer per
// batch holding every column, and hand the batches over in submission order (or as
// they complete). No Python, no torch: the caller owns the arrays' memory and keeps it
// alive until close() returns.
// Thread-safe: submit(), next() and close() may be called from different threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "index_plan.h"
#include "staging_ring.h"
#include "strided_array.h"
#include "thread_pool.h"

namespace ferry {

// Where each column of a batch of `rows` rows lives inside its slot.
struct BatchLayout {
  std::vector<int64_t> offsets;  // byte offset of each column, 64-byte aligned
  int64_t total_bytes = 0;

  static BatchLayout make(const std::vector<int64_t>& row_bytes, int64_t rows);
};

struct Batch {
  int64_t seq = -1;
  int64_t rows = 0;
  std::vector<int64_t> indices;  // as submitted
  std::shared_ptr<Buffer> buffer;  // claimed from the ring; null when the batch failed
  BatchLayout layout;
  // When torch itself would reject the batch (an index out of range, an empty batch):
  // the position of the first such index, so the caller can let torch raise its error.
  int64_t rejected_position = -1;
  std::string error;  // any other failure, with its reason
  double gather_seconds = 0;  // the time a thread spent on this batch
  // What the transfer step (below) made of the filled slot, opaque to the core, and the
  // time it took.
  std::shared_ptr<void> transfer;
  double transfer_seconds = 0;
};

// An optional step run by the gather thread right after it filled a batch's slot, before
// the batch is ready: the torch layer starts the batch's copy to a device there. It may
// set batch.transfer; an exception it throws becomes the batch's error.
using TransferStep = std::function<void(Batch&)>;

class GatherPipeline {
 public:
  // `leaves[l][c]` is column c of leaf l; every leaf has the same columns (row bytes).
  GatherPipeline(IndexPlan plan, std::vector<std::vector<StridedArray>> leaves,
                 size_t num_threads, size_t max_in_flight, std::shared_ptr<StagingRing> ring,
                 bool in_order, TransferStep transfer = {});
  ~GatherPipeline();

  GatherPipeline(const GatherPipeline&) = delete;
  GatherPipeline& operator=(const GatherPipeline&) = delete;

  // Queues one batch; returns its sequence number. At most `max_in_flight` batches may be
  // submitted and not yet taken by next(): one more is an error, not a wait.
  int64_t submit(std::vector<int64_t> indices);

  // The next batch (see class comment). Waits at most `timeout_s` seconds when positive,
  // else until one is there; nullopt on timeout. Throws once closed.
  std::optional<Batch> next(double timeout_s);

  // Hands a batch's slot back to the ring (after the caller made its views of it).
  void release(const Batch& batch);

  // Stops the threads: queued batches are dropped, a running one stops at its next row
  // block, waiters in next() are woken with an error. Idempotent. In a forked child it
  // only lets go of the (parent's) threads.
  void close();

  int64_t in_flight() const;
  size_t num_threads() const { return num_threads_; }
  const std::vector<int64_t>& row_bytes() const { return row_bytes_; }

 private:
  void gather(int64_t seq, std::vector<int64_t> indices);
  void finish(Batch batch);

  const IndexPlan plan_;
  const std::vector<std::vector<StridedArray>> leaves_;
  std::vector<int64_t> row_bytes_;
  const size_t num_threads_;
  const size_t max_in_flight_;
  const std::shared_ptr<StagingRing> ring_;
  const bool in_order_;
  const TransferStep transfer_;

  std::atomic<bool> stopping_{false};
  struct Sync {
    mutable std::mutex mutex;  // guards everything below `sync_`
    std::condition_variable ready_cv;
    // Held for the whole of close(), so that a second close() (or the destructor's)
    // returns only once the threads are joined. Never taken with `mutex` held.
    std::mutex close_mutex;
  };
  // Behind a pointer so that a forked child can leak it (see ThreadPool::tasks_).
  std::unique_ptr<Sync> sync_ = std::make_unique<Sync>();
  std::map<int64_t, Batch> ready_;
  int64_t submitted_ = 0;
  int64_t taken_ = 0;
  int64_t next_seq_ = 0;  // in order: the sequence number next() hands out next
  bool closed_ = false;

  std::unique_ptr<ThreadPool> pool_;  // last: its threads use everything above
};

}  // namespace ferry
