// A fixed set of threads running submitted tasks in FIFO order.
// Thread-safe. The destructor (or shutdown()) drops queued tasks, lets running ones
// finish and joins every thread: tasks must therefore not block indefinitely.
#pragma once

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bounded_queue.h"

namespace ferry {

class ThreadPool {
 public:
  using Task = std::function<void()>;

  // `queue_capacity` bounds the tasks waiting for a thread; submit() blocks beyond it.
  ThreadPool(size_t num_threads, size_t queue_capacity);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // False once the pool is shut down (the task is dropped). Tasks must not throw: an
  // escaping exception is a bug in the caller and terminates, as std::thread would.
  bool submit(Task task);

  // Idempotent. Call it from the owning thread (never from a pool thread).
  void shutdown();

  size_t num_threads() const { return threads_.size(); }

 private:
  void run();

  BoundedQueue<Task> tasks_;
  std::vector<std::thread> threads_;
};

}  // namespace ferry
