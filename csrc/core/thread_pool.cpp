#include "thread_pool.h"

namespace ferry {

ThreadPool::ThreadPool(size_t num_threads, size_t queue_capacity) : tasks_(queue_capacity) {
  FERRY_CHECK(num_threads > 0, "ThreadPool needs at least one thread");
  threads_.reserve(num_threads);
  for (size_t i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

bool ThreadPool::submit(Task task) { return tasks_.push(std::move(task)); }

void ThreadPool::shutdown() {
  tasks_.close();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void ThreadPool::run() {
  while (auto task = tasks_.pop()) {
    (*task)();
  }
}

}  // namespace ferry
