#include "thread_pool.h"

#include <unistd.h>

namespace ferry {

ThreadPool::ThreadPool(size_t num_threads, size_t queue_capacity)
    : tasks_(std::make_unique<BoundedQueue<Task>>(queue_capacity)), owner_pid_(::getpid()) {
  FERRY_CHECK(num_threads > 0, "ThreadPool needs at least one thread");
  threads_.reserve(num_threads);
  for (size_t i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

bool ThreadPool::submit(Task task) { return tasks_->push(std::move(task)); }

bool ThreadPool::forked() const { return ::getpid() != owner_pid_; }

void ThreadPool::shutdown() {
  if (forked()) {
    // Joining would wait forever, and the queue's lock may have been held at the fork.
    for (auto& t : threads_) {
      if (t.joinable()) t.detach();
    }
    (void)tasks_.release();  // leaked on purpose, see tasks_
    return;
  }
  tasks_->close();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void ThreadPool::run() {
  while (auto task = tasks_->pop()) {
    (*task)();
  }
}

}  // namespace ferry
