// StagingRing: slots reused only once released and unused; kWait waits for copies.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "core/bounded_queue.h"
#include "core/staging_ring.h"
#include "harness.h"
#include "test_buffers.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

using ferry::BoundedQueue;
using ferry::StagingRing;

FERRY_TEST(ring_reuse_needs_release_and_not_in_use) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(2, factory_of(f));
  EXPECT_EQ(ring.capacity(), 2u);
  auto a = ring.acquire(100);
  REQUIRE(a && a->size() >= 100);
  // Claimed, not released: never handed out again.
  auto b = ring.acquire(100);
  REQUIRE(b);
  EXPECT(b != a, ": a claimed buffer was handed out twice");
  // a: released but still in use (a user's tensor views it) -> not reused.
  as_test_buffer(a)->hold();
  ring.release(a.get());
  // b: released and unused -> reused.
  ring.release(b.get());
  auto c = ring.acquire(100);
  EXPECT(c == b, ": a released, unused slot was not reused");
  // Both slots busy now (a in use, c claimed): a fresh untracked buffer.
  const int calls = f->calls.load();
  auto d = ring.acquire(100);
  REQUIRE(d);
  EXPECT(d != a && d != c, ": a busy slot was handed out");
  EXPECT_EQ(f->calls.load(), calls + 1);
  EXPECT_EQ(ring.untracked_allocations(), 1u);
  EXPECT_EQ(ring.slots(), 2u);
  // Not reused while in use even though released...
  auto e = ring.acquire(100);
  EXPECT(e != a);
  EXPECT_EQ(ring.untracked_allocations(), 2u);
  // ...and reused once the last view is gone.
  as_test_buffer(a)->drop();
  auto g = ring.acquire(100);
  EXPECT(g == a, ": a released slot with no users was not reused");
  // In use but never released: still not reusable.
  as_test_buffer(g)->hold();
  as_test_buffer(g)->drop();
  auto h = ring.acquire(100);
  EXPECT(h != g, ": a slot was reused without release()");
  // Releasing an untracked buffer is a no-op.
  ring.release(d.get());
  ring.release(nullptr);
  EXPECT_EQ(ring.slots(), 2u);
}

FERRY_TEST(ring_capacity_bounds_tracked_slots) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(3, factory_of(f));
  std::vector<std::shared_ptr<Buffer>> got;
  for (int i = 0; i < 10; ++i) got.push_back(ring.acquire(64));
  EXPECT_EQ(ring.slots(), 3u);
  EXPECT_EQ(ring.bytes(), 3u * 64u);
  EXPECT_EQ(ring.untracked_allocations(), 7u);
  EXPECT_EQ(f->calls.load(), 10);
  std::set<Buffer*> distinct;
  for (auto& b : got) distinct.insert(b.get());
  EXPECT_EQ(distinct.size(), 10u);
  // Releasing the tracked ones makes exactly those reusable again.
  for (auto& b : got) ring.release(b.get());
  std::set<Buffer*> reused;
  for (int i = 0; i < 3; ++i) reused.insert(ring.acquire(64).get());
  EXPECT_EQ(f->calls.load(), 10);
  for (int i = 0; i < 3; ++i) EXPECT(reused.count(got[static_cast<size_t>(i)].get()) == 1);
  EXPECT_EQ(ring.untracked_allocations(), 7u);
}

FERRY_TEST(ring_replaces_too_small_free_slot) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(1, factory_of(f));
  auto small = ring.acquire(100);
  ring.release(small.get());
  auto big = ring.acquire(1000);
  REQUIRE(big);
  EXPECT(big != small);
  EXPECT(big->size() >= 1000u);
  EXPECT_EQ(ring.slots(), 1u);
  EXPECT_EQ(ring.bytes(), 1000u);
  EXPECT_EQ(ring.untracked_allocations(), 0u);
  // A bigger free slot serves a smaller request.
  ring.release(big.get());
  EXPECT(ring.acquire(10) == big);
  ring.release(big.get());
  // A too-small slot that is still in use is not replaced: untracked instead.
  StagingRing ring2(1, factory_of(f));
  auto s = ring2.acquire(100);
  as_test_buffer(s)->hold();
  ring2.release(s.get());
  auto t = ring2.acquire(1000);
  EXPECT(t != s);
  EXPECT_EQ(ring2.untracked_allocations(), 1u);
  EXPECT_EQ(ring2.bytes(), 100u);
  as_test_buffer(s)->drop();
  // With a free slot too small and a free slot big enough, the big one is used.
  StagingRing ring3(2, factory_of(f));
  auto x = ring3.acquire(50);
  auto y = ring3.acquire(500);
  ring3.release(x.get());
  ring3.release(y.get());
  EXPECT(ring3.acquire(400) == y);
  EXPECT_EQ(ring3.bytes(), 550u);
}

FERRY_TEST(ring_capacity_zero_never_reuses) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(0, factory_of(f));
  std::set<Buffer*> seen;
  std::vector<std::shared_ptr<Buffer>> keep;  // keep them alive: addresses stay distinct
  for (int i = 0; i < 5; ++i) {
    auto b = ring.acquire(64);
    REQUIRE(b && b->size() >= 64u);
    EXPECT(seen.insert(b.get()).second, ": capacity 0 reused a buffer");
    ring.release(b.get());
    keep.push_back(b);
  }
  EXPECT_EQ(f->calls.load(), 5);
  EXPECT_EQ(ring.slots(), 0u);
  EXPECT_EQ(ring.bytes(), 0u);
}

FERRY_TEST(ring_factory_checks) {
  EXPECT_THROWS(StagingRing(2, BufferFactory()), "factory");
  auto f = std::make_shared<TestFactory>();
  f->short_if = [](size_t n) { return n > 100; };
  StagingRing ring(1, factory_of(f));
  EXPECT_THROWS(ring.acquire(1000), "too little");
  EXPECT_EQ(ring.slots(), 0u);
  auto a = ring.acquire(100);  // tracked
  EXPECT_THROWS(ring.acquire(1000), "too little");  // untracked path
  ring.release(a.get());
  EXPECT_THROWS(ring.acquire(1000), "too little");  // growing the free slot
  StagingRing null_ring(1, [](size_t) { return std::shared_ptr<Buffer>(); });
  EXPECT_THROWS(null_ring.acquire(1), "too little");
}

FERRY_TEST(ring_concurrent_claims_are_exclusive) {
  // Threads acquire, write, sometimes keep the buffer "in use" past release(); a buffer
  // must never be handed to a second party while claimed or in use.
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(3, factory_of(f));
  std::atomic<int> conflicts{0};
  std::vector<std::unique_ptr<Async>> threads;
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::make_unique<Async>([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < 3000; ++i) {
        auto b = ring->acquire(static_cast<size_t>(64 + rng() % 64));
        TestBuffer* tb = as_test_buffer(b);
        if (tb->owner.exchange(1) != 0) conflicts.fetch_add(1);
        const uint8_t mark = static_cast<uint8_t>(t * 16 + i);
        std::memset(tb->data(), mark, 64);
        if (rng() % 2 == 0) {
          tb->hold();
          ring->release(tb);
          // A user still reads the memory after the claim ended.
          for (int k = 0; k < 64; ++k) {
            if (tb->data()[k] != mark) conflicts.fetch_add(1);
          }
          tb->owner.store(0);
          tb->drop();
        } else {
          tb->owner.store(0);
          ring->release(tb);
        }
      }
    }));
  }
  threads.clear();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT(ring->slots() <= 3u);
}

// kWait: with every slot released but its copy still running, acquire() waits for the
// oldest slot's copy and reuses it, allocating nothing.
FERRY_TEST(ring_wait_mode_waits_for_the_oldest_copy) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f), StagingRing::WhenFull::kWait);
  auto first = ring->acquire(64), second = ring->acquire(64);
  for (const auto& b : {first, second}) {
    as_test_buffer(b)->start_copy();
    ring->release(b.get());
  }
  std::shared_ptr<Buffer> got;
  Async waiter([&] { got = ring->acquire(64); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT(!waiter.done(), ": acquire() returned while every slot's copy was running");
  as_test_buffer(second)->finish_copy();  // not the one it waits for
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT(!waiter.done(), ": acquire() did not wait for the oldest copy");
  as_test_buffer(first)->finish_copy();
  REQUIRE(waiter.wait_done());
  EXPECT(got == first || got == second);
  EXPECT_EQ(ring->slots(), 2u);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
  EXPECT_EQ(ring->copy_waits(), 1u);
  EXPECT_EQ(f->calls.load(), 2);
}

// kWait never waits for what is not a copy (a user's view): it allocates around it, at
// once, as kAllocate does.
FERRY_TEST(ring_wait_mode_allocates_around_a_held_slot) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(1, factory_of(f), StagingRing::WhenFull::kWait);
  auto held = ring->acquire(64);
  as_test_buffer(held)->hold();
  ring->release(held.get());
  std::shared_ptr<Buffer> got;
  Async taker([&] { got = ring->acquire(64); });
  REQUIRE(taker.wait_done());
  EXPECT(got != held);
  EXPECT_EQ(ring->untracked_allocations(), 1u);
  as_test_buffer(held)->drop();
}

// kWait under contention: producers fill slots and hand them to a slow "copy engine"
// that checks the bytes before finishing each copy; no slot is refilled before its copy
// finished, and the ring, with more slots than claimers, never allocates beyond them.
FERRY_TEST(ring_wait_mode_concurrent_copies_are_exclusive) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(6, factory_of(f), StagingRing::WhenFull::kWait);
  std::atomic<int> conflicts{0};
  struct Pending {
    TestBuffer* buffer;
    uint8_t mark;
  };
  BoundedQueue<Pending> engine_queue(1024);
  Async engine([&] {
    int n = 0;
    while (auto p = engine_queue.pop()) {
      if (p->buffer == nullptr) return;  // the producers are done
      if (++n % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      for (int k = 0; k < 64; ++k) {
        if (p->buffer->data()[k] != p->mark) conflicts.fetch_add(1);
      }
      p->buffer->owner.store(0);
      p->buffer->finish_copy();
    }
  });
  {
    std::vector<std::unique_ptr<Async>> producers;
    for (int t = 0; t < 4; ++t) {
      producers.push_back(std::make_unique<Async>([&, t] {
        for (int i = 0; i < 1500; ++i) {
          auto b = ring->acquire(64);
          TestBuffer* tb = as_test_buffer(b);
          if (tb->owner.exchange(1) != 0) conflicts.fetch_add(1);
          const uint8_t mark = static_cast<uint8_t>(t * 16 + i);
          std::memset(tb->data(), mark, 64);
          tb->start_copy();
          ring->release(tb);
          engine_queue.push(Pending{tb, mark});
        }
      }));
    }
  }
  engine_queue.push(Pending{nullptr, 0});
  engine.join();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
  EXPECT(ring->slots() <= 6u);
  EXPECT(ring->copy_waits() > 0u, ": the producers never outran the engine");
}
