// BoundedQueue: order, blocking, close() and timeouts, many producers and consumers.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/bounded_queue.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

using ferry::BoundedQueue;

FERRY_TEST(queue_fifo_order) {
  BoundedQueue<int> q(100);
  for (int i = 0; i < 100; ++i) REQUIRE(q.push(i));
  EXPECT_EQ(q.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    auto v = q.pop();
    REQUIRE(v.has_value());
    EXPECT_EQ(*v, i);
  }
  EXPECT_EQ(q.size(), 0u);
  // Move-only items pass through.
  BoundedQueue<std::unique_ptr<int>> mq(2);
  REQUIRE(mq.push(std::make_unique<int>(7)));
  auto p = mq.pop();
  REQUIRE(p.has_value() && *p);
  EXPECT_EQ(**p, 7);
}

FERRY_TEST(queue_rejects_zero_capacity) {
  EXPECT_THROWS(BoundedQueue<int>(0), "capacity");
}

FERRY_TEST(queue_push_blocks_while_full) {
  BoundedQueue<int> q(2);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  std::atomic<bool> pushed{false};
  Async producer([&] {
    EXPECT(q.push(3));
    pushed.store(true);
  });
  sleep_ms(50);
  EXPECT(!pushed.load(), ": push() on a full queue returned before any pop()");
  EXPECT_EQ(q.size(), 2u);
  auto v = q.pop();
  REQUIRE(v.has_value());
  EXPECT_EQ(*v, 1);
  EXPECT(producer.wait_done(), ": push() still blocked after a pop()");
  EXPECT(pushed.load());
  EXPECT_EQ(q.pop().value_or(-1), 2);
  EXPECT_EQ(q.pop().value_or(-1), 3);
}

FERRY_TEST(queue_close_wakes_blocked_pop) {
  BoundedQueue<int> q(4);
  std::atomic<bool> got_nullopt{false};
  Async consumer([&] { got_nullopt.store(!q.pop().has_value()); });
  sleep_ms(30);  // let it block (if it has not yet, pop() after close() is checked too)
  EXPECT(!consumer.done(), ": pop() on an empty queue returned");
  q.close();
  EXPECT(consumer.wait_done(), ": close() did not wake a blocked pop()");
  consumer.join();
  EXPECT(got_nullopt.load(), ": pop() after close() returned an item");
  EXPECT(q.closed());
  EXPECT(!q.pop().has_value());
}

FERRY_TEST(queue_close_wakes_blocked_push) {
  BoundedQueue<int> q(1);
  REQUIRE(q.push(1));
  std::atomic<int> result{-1};
  Async producer([&] { result.store(q.push(2) ? 1 : 0); });
  sleep_ms(30);
  EXPECT(!producer.done(), ": push() on a full queue returned");
  q.close();
  EXPECT(producer.wait_done(), ": close() did not wake a blocked push()");
  producer.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT(!q.push(3), ": push() after close() succeeded");
}

FERRY_TEST(queue_try_push_when_full_or_closed) {
  BoundedQueue<int> q(2);
  EXPECT(q.try_push(1));
  EXPECT(q.try_push(2));
  EXPECT(!q.try_push(3), ": try_push() on a full queue succeeded");
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.pop().value_or(-1), 1);
  EXPECT(q.try_push(3));
  EXPECT_EQ(q.pop().value_or(-1), 2);
  EXPECT_EQ(q.pop().value_or(-1), 3);
  q.close();
  EXPECT(!q.try_push(4), ": try_push() after close() succeeded");
}

FERRY_TEST(queue_pop_for_times_out) {
  BoundedQueue<int> q(2);
  const auto t0 = Clock::now();
  auto v = q.pop_for(std::chrono::milliseconds(30));
  const double waited = seconds_since(t0);
  EXPECT(!v.has_value());
  EXPECT(waited >= 0.025, ": pop_for(30 ms) returned after ", waited, " s");
  EXPECT(waited < kPrompt, ": pop_for(30 ms) took ", waited, " s");
  EXPECT(!q.closed(), ": a timeout closed the queue");
  REQUIRE(q.push(5));
  EXPECT_EQ(q.pop_for(std::chrono::milliseconds(30)).value_or(-1), 5);
  // An item pushed while waiting is returned before the timeout.
  Async producer([&] {
    sleep_ms(20);
    q.push(6);
  });
  EXPECT_EQ(q.pop_for(std::chrono::seconds(5)).value_or(-1), 6);
}

FERRY_TEST(queue_close_drops_items) {
  BoundedQueue<int> q(4);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  q.close();
  EXPECT(!q.pop().has_value(), ": close() should drop queued items");
  EXPECT(!q.pop_for(std::chrono::milliseconds(1)).has_value());
  EXPECT_EQ(q.size(), 0u);
  q.close();  // idempotent
  EXPECT(q.closed());
}

FERRY_TEST(queue_many_producers_and_consumers) {
  constexpr int kProducers = 4, kPerProducer = 3000, kConsumers = 3;
  BoundedQueue<std::pair<int, int>> q(8);
  std::mutex m;
  std::vector<std::vector<std::pair<int, int>>> seen(kConsumers);
  std::atomic<int> taken{0};
  std::vector<std::unique_ptr<Async>> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.push_back(std::make_unique<Async>([&, p] {
      for (int i = 0; i < kPerProducer; ++i) EXPECT(q.push({p, i}));
    }));
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.push_back(std::make_unique<Async>([&, c] {
      const auto deadline = Clock::now() + std::chrono::duration<double>(kPatience);
      while (taken.load() < kProducers * kPerProducer && Clock::now() < deadline) {
        if (auto v = q.pop_for(std::chrono::milliseconds(5))) {
          seen[c].push_back(*v);
          taken.fetch_add(1);
        }
      }
    }));
  }
  threads.clear();  // joins
  std::vector<int> count(kProducers * kPerProducer, 0);
  for (const auto& s : seen) {
    std::vector<int> last(kProducers, -1);
    for (auto [p, i] : s) {
      ++count[p * kPerProducer + i];
      EXPECT(i > last[p], ": a consumer saw producer ", p, "'s items out of order");
      last[p] = i;
    }
  }
  for (size_t k = 0; k < count.size(); ++k) {
    REQUIRE(count[k] == 1, ": item ", k, " was popped ", count[k], " times");
  }
}
