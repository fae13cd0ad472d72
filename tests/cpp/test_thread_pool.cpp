// ThreadPool: each task once, on the pool's threads; shutdown() joins and drops the queue.
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

using ferry::ThreadPool;

FERRY_TEST(pool_runs_each_task_exactly_once) {
  constexpr int kTasks = 5000;
  std::vector<std::atomic<int>> runs(kTasks);
  std::atomic<int> done{0};
  std::atomic<int> arrived{0};
  std::atomic<bool> met{false};
  std::mutex m;
  std::set<std::thread::id> ids;
  ThreadPool pool(4, 64);
  EXPECT_EQ(pool.num_threads(), 4u);
  for (int i = 0; i < kTasks; ++i) {
    const bool queued = pool.submit([&, i] {
      if (i < 2) {  // the first two meet: two threads run tasks at the same time
        arrived.fetch_add(1);
        if (eventually([&] { return arrived.load() >= 2; })) met.store(true);
      }
      runs[i].fetch_add(1);
      {
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      }
      done.fetch_add(1);
    });
    REQUIRE(queued);
  }
  EXPECT(eventually([&] { return done.load() == kTasks; }, kPatience), ": ", done.load(),
         " of ", kTasks, " tasks ran");
  pool.shutdown();
  for (int i = 0; i < kTasks; ++i) {
    REQUIRE(runs[i].load() == 1, ": task ", i, " ran ", runs[i].load(), " times");
  }
  EXPECT(met.load(), ": two tasks never ran concurrently");
  EXPECT(ids.size() >= 2u, ": tasks ran on ", ids.size(), " thread(s)");
  EXPECT(ids.count(std::this_thread::get_id()) == 0, ": a task ran on the submitting thread");
}

FERRY_TEST(pool_rejects_zero_threads) {
  EXPECT_THROWS(ThreadPool(0, 4), "at least one thread");
}

FERRY_TEST(pool_shutdown_joins_and_is_idempotent) {
  std::atomic<int> started{0}, finished{0};
  ThreadPool pool(2, 8);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(pool.submit([&] {
      started.fetch_add(1);
      sleep_ms(50);
      finished.fetch_add(1);
    }));
  }
  REQUIRE(eventually([&] { return started.load() == 2; }));
  const auto t0 = Clock::now();
  pool.shutdown();
  EXPECT_EQ(finished.load(), 2);  // running tasks complete before shutdown() returns
  EXPECT(seconds_since(t0) < kPrompt);
  pool.shutdown();  // idempotent
  pool.shutdown();
}

FERRY_TEST(pool_submit_after_shutdown_fails) {
  std::atomic<bool> ran{false};
  ThreadPool pool(2, 4);
  pool.shutdown();
  EXPECT(!pool.submit([&] { ran.store(true); }), ": submit() after shutdown() succeeded");
  sleep_ms(10);
  EXPECT(!ran.load());
}

FERRY_TEST(pool_shutdown_drops_queued_tasks) {
  Gate gate;
  std::atomic<bool> first_started{false};
  std::atomic<int> ran{0};
  ThreadPool pool(1, 8);
  REQUIRE(pool.submit([&] {
    first_started.store(true);
    gate.wait();
  }));
  REQUIRE(eventually([&] { return first_started.load(); }));
  for (int i = 0; i < 5; ++i) REQUIRE(pool.submit([&] { ran.fetch_add(1); }));
  Async shutter([&] { pool.shutdown(); });
  // submit() fails once shutdown() closed the queue (it may block on a full queue first).
  EXPECT(eventually([&] { return !pool.submit([&] { ran.fetch_add(1); }); }),
         ": submit() kept succeeding during shutdown()");
  EXPECT(!shutter.done(), ": shutdown() returned while a task was still running");
  gate.open();
  EXPECT(shutter.wait_done(), ": shutdown() did not return after the running task ended");
  EXPECT_EQ(ran.load(), 0);  // queued tasks were dropped, not run
}

FERRY_TEST(pool_destructor_with_queued_tasks_returns) {
  Gate gate;
  std::atomic<int> ran{0};
  auto pool = std::make_unique<ThreadPool>(2, 64);
  for (int i = 0; i < 50; ++i) {
    REQUIRE(pool->submit([&] {
      gate.wait();
      ran.fetch_add(1);
    }));
  }
  Async destroyer([&] { pool.reset(); });
  sleep_ms(50);
  gate.open();
  EXPECT(destroyer.wait_done(), ": ~ThreadPool() with queued tasks did not return");
  EXPECT(ran.load() <= 50);
}
