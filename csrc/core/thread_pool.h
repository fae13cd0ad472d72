// A fixed set of threads running submitted tasks in FIFO order.
// Thread-safe. The destructor (or shutdown()) drops queued tasks, lets running ones
// finish and joins every thread: tasks must therefore not block indefinitely.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
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

  // Idempotent. Call it from the owning thread (never from a pool thread). In a process
  // forked from the owner it only lets go of the threads, which do not exist there.
  void shutdown();

  // True in a child forked from the process that made this pool: its threads, and any
  // lock they held at the fork, exist only in the parent.
  bool forked() const;

  size_t num_threads() const { return threads_.size(); }

 private:
  void run();

  // Behind a pointer so that a forked child can leak it: destroying a condition variable
  // that the parent's threads were waiting on blocks forever in glibc.
  std::unique_ptr<BoundedQueue<Task>> tasks_;
  std::vector<std::thread> threads_;
  const pid_t owner_pid_;
};

}  // namespace ferry
