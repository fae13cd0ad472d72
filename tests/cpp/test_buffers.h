// Test doubles of the staging ring's buffers: a Buffer whose in_use() the test controls,
// and a buffer factory that counts, keeps, holds, fails or short-changes its calls.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "core/staging_ring.h"
#include "harness.h"

namespace harness {

using ferry::Buffer;
using ferry::BufferFactory;

// A Buffer whose in_use() the test controls: hold()/drop() stand for a user's views,
// start_copy()/finish_copy() for an asynchronous copy out of it.
class TestBuffer : public Buffer {
 public:
  TestBuffer(size_t nbytes, uint8_t fill) : bytes_(nbytes, fill) {}
  uint8_t* data() override { return bytes_.data(); }
  size_t size() const override { return bytes_.size(); }
  bool in_use() const override {
    return users_.load(std::memory_order_acquire) > 0 ||
           copying_.load(std::memory_order_acquire);
  }
  void hold() { users_.fetch_add(1, std::memory_order_relaxed); }
  void drop() { users_.fetch_sub(1, std::memory_order_release); }
  void start_copy() { copying_.store(true, std::memory_order_relaxed); }
  void finish_copy() {
    {
      std::lock_guard<std::mutex> lock(copy_mutex_);
      copying_.store(false, std::memory_order_release);
    }
    copy_done_.notify_all();
  }
  bool wait_for_copies() override {
    std::unique_lock<std::mutex> lock(copy_mutex_);
    copy_done_.wait(lock, [&] { return !copying_.load(std::memory_order_acquire); });
    return true;
  }
  // Set while exactly one party may touch the bytes; catches double hand-outs.
  std::atomic<int> owner{0};

 private:
  std::vector<uint8_t> bytes_;
  std::atomic<int> users_{0};
  std::atomic<bool> copying_{false};
  std::mutex copy_mutex_;
  std::condition_variable copy_done_;
};

inline TestBuffer* as_test_buffer(const std::shared_ptr<Buffer>& b) {
  return static_cast<TestBuffer*>(b.get());
}

// A buffer factory that counts calls, keeps what it made, and can hold calls at a gate
// (block_if), throw (throw_if) or return too little memory (short_if).
struct TestFactory {
  uint8_t fill = 0xEE;
  std::function<bool(size_t)> block_if;
  std::function<bool(size_t)> throw_if;
  std::function<bool(size_t)> short_if;
  Gate gate;
  std::atomic<int> calls{0};
  std::atomic<int> blocked_now{0};  // calls waiting at the gate right now
  std::mutex mutex;
  std::vector<std::shared_ptr<TestBuffer>> made;

  std::shared_ptr<TestBuffer> made_at(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    return i < made.size() ? made[i] : nullptr;
  }
};

inline BufferFactory factory_of(const std::shared_ptr<TestFactory>& f) {
  return [f](size_t nbytes) -> std::shared_ptr<Buffer> {
    f->calls.fetch_add(1);
    if (f->block_if && f->block_if(nbytes)) {
      f->blocked_now.fetch_add(1);
      f->gate.wait();
      f->blocked_now.fetch_sub(1);
    }
    if (f->throw_if && f->throw_if(nbytes)) throw std::runtime_error("test factory: no memory");
    const size_t n = f->short_if && f->short_if(nbytes) ? nbytes / 2 : nbytes;
    auto b = std::make_shared<TestBuffer>(n, f->fill);
    std::lock_guard<std::mutex> lock(f->mutex);
    f->made.push_back(b);
    return b;
  };
}

}  // namespace harness
