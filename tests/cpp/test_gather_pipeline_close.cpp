// GatherPipeline shutdown: close() and the destructor are prompt, wake waiters, stop
// running batches, give their slots back, and a forked child's copy closes without hanging.
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "core/gather_pipeline.h"
#include "core/index_plan.h"
#include "core/staging_ring.h"
#include "gather_fixture.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

FERRY_TEST(gather_close_while_gathering_is_prompt) {
  // Large batches of 4 KiB rows read with a 1 KiB stride (an int16 array's transpose),
  // many threads; close() as soon as the first batch started.
  View v = make_view({512, 2048}, {2, 1024}, 2, 5);
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(8, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(plan_of(ref_leaf(0, 512)),
                                            std::vector<std::vector<StridedArray>>{{v.array()}},
                                            4, 6, ring, /*in_order=*/true);
  std::mt19937 rng(3);
  for (int k = 0; k < 6; ++k) {
    std::vector<int64_t> idx(2048);
    for (auto& i : idx) i = static_cast<int64_t>(rng() % 1024) - 512;
    p->submit(std::move(idx));
  }
  REQUIRE(eventually([&] { return f->calls.load() >= 1; }));
  const auto t0 = Clock::now();
  p->close();
  const double took = seconds_since(t0);
  EXPECT(took < kPrompt, ": close() took ", took, " s");
  EXPECT_THROWS(p->next(0.05), "closed");
  EXPECT_THROWS(p->next(0), "closed");
  EXPECT_THROWS(p->submit({0}), "closed");
  p->close();  // idempotent
  const auto t1 = Clock::now();
  p.reset();
  EXPECT(seconds_since(t1) < kPrompt);
  EXPECT(ring->slots() <= 8u);
}

FERRY_TEST(gather_close_stops_a_running_batch) {
  // One batch of 1000 rows waits in the buffer factory (a ring slot being allocated);
  // close() is called; then the factory returns. The gather must stop at its next row
  // block (the tail of the buffer is never written, the slot goes back to the ring), and
  // close() waits for the thread.
  SimpleSource src(1000);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(1, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(src.plan(), src.arrays(), 2, 2, ring, true);
  p->submit(iota_batch(1000));
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async closer([&] { p->close(); });
  EXPECT(eventually([&] { return next_reports_closed(*p); }), ": close() did not close");
  sleep_ms(100);  // close() goes on to flag the threads to stop, then joins them
  EXPECT(!closer.done(), ": close() returned while a gather thread was still running");
  f->gate.open();
  EXPECT(closer.wait_done(), ": close() did not return once the gather thread could stop");
  closer.join();
  auto buffer = f->made_at(0);
  REQUIRE(buffer != nullptr);
  size_t untouched_from = buffer->size();
  while (untouched_from > 0 && buffer->data()[untouched_from - 1] == f->fill) --untouched_from;
  EXPECT(untouched_from <= 128u * 64u, ": the gather went on after close() up to byte ",
         untouched_from, " of ", buffer->size());
  // The stopped batch gave its slot back.
  const int calls = f->calls.load();
  EXPECT(ring->acquire(buffer->size()) == buffer, ": the stopped batch kept its slot");
  EXPECT_EQ(f->calls.load(), calls);
  EXPECT_THROWS(p->submit({0}), "closed");
}

FERRY_TEST(gather_close_wakes_a_waiting_next) {
  SimpleSource src(100);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(src.plan(), src.arrays(), 1, 2, ring, true);
  p.submit({1, 2});
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  std::atomic<int> outcome{0};  // 1: threw ferry::Error, 2: returned
  Async waiter([&] {
    try {
      p.next(0);  // no timeout
      outcome.store(2);
    } catch (const ferry::Error&) {
      outcome.store(1);
    }
  });
  sleep_ms(30);
  EXPECT(!waiter.done(), ": next() returned while the batch was still being gathered");
  Async closer([&] { p.close(); });
  // The waiter is woken by close() itself, while the gather thread is still stuck.
  EXPECT(waiter.wait_done(), ": close() did not wake a waiter in next()");
  EXPECT_EQ(outcome.load(), 1);
  f->gate.open();
  EXPECT(closer.wait_done());
}

FERRY_TEST(gather_second_close_waits_for_threads) {
  // close() from two threads: the contract is that the arrays' memory may be freed once
  // close() returns, so the second caller too must only return after the threads stopped.
  SimpleSource src(1000);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(src.plan(), src.arrays(), 1, 2, ring, true);
  p->submit(iota_batch(1000));
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async first([&] { p->close(); });
  REQUIRE(eventually([&] { return next_reports_closed(*p); }));
  Async opener([&] {
    sleep_ms(200);
    f->gate.open();
  });
  p->close();
  const int still_running = f->blocked_now.load();
  EXPECT_EQ(still_running, 0);  // 1: close() returned while a gather thread ran
  opener.join();
  EXPECT(first.wait_done());
  first.join();
  p.reset();
}

FERRY_TEST(gather_destructor_joins_and_frees_slots) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 40);
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(fx.plan(), fx.arrays(), 2, 4, ring, true);
  p->submit({0, 1});
  p->submit({2, 3});
  REQUIRE(eventually([&] { return f->calls.load() == 2; }));
  p->submit(iota_batch(40));  // blocks in the factory (holding the ring's lock)
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async destroyer([&] { p.reset(); });
  sleep_ms(100);
  EXPECT(!destroyer.done(), ": the destructor returned while a gather thread was running");
  f->gate.open();
  EXPECT(destroyer.wait_done(), ": the destructor did not return");
  destroyer.join();
  EXPECT_EQ(f->blocked_now.load(), 0);
  // Every slot went back to the ring: the same sizes are served without allocating.
  EXPECT_EQ(ring->slots(), 3u);
  const int calls = f->calls.load();
  std::vector<std::shared_ptr<Buffer>> again;
  const auto small = static_cast<size_t>(batch_bytes(fx, 2));
  for (int k = 0; k < 3; ++k) again.push_back(ring->acquire(small));
  EXPECT_EQ(f->calls.load(), calls);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
}

FERRY_TEST(gather_pipeline_in_a_forked_child_closes_without_hanging) {
  // A child forked while the pipeline's threads wait (a DataLoader worker forked by
  // another loader) may destroy its copy: that must neither join the parent's threads
  // nor wait on locks they hold.
  std::vector<uint8_t> data(16 * 4);
  std::vector<std::vector<ferry::StridedArray>> leaves(1);
  leaves[0].emplace_back(data.data(), std::vector<int64_t>{16, 4}, std::vector<int64_t>{4, 1}, 1);
  ferry::IndexPlan plan;
  plan.add_leaf(0, 16);
  auto ring = std::make_shared<ferry::StagingRing>(
      4, [](size_t n) -> std::shared_ptr<ferry::Buffer> {
        struct Vec : ferry::Buffer {
          explicit Vec(size_t n) : v(n) {}
          uint8_t* data() override { return v.data(); }
          size_t size() const override { return v.size(); }
          bool in_use() const override { return false; }
          std::vector<uint8_t> v;
        };
        return std::make_shared<Vec>(n);
      });
  auto pipeline = std::make_unique<ferry::GatherPipeline>(std::move(plan), std::move(leaves), 2, 4,
                                                          ring, true);
  pipeline->submit({1, 2, 3});
  REQUIRE(pipeline->next(5.0).has_value());
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    pipeline.reset();  // would hang in join() without the fork guard
    ::_exit(0);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  EXPECT(done == pid, "the child hung destroying its copy of the pipeline");
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  pipeline->close();  // the parent's own pipeline still closes normally
}
