// GatherPipeline: batches byte-identical to the source, in order or as ready, rejected
// indices, failures as batch errors, the transfer step, the in-flight bound.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/bounded_queue.h"
#include "core/gather_pipeline.h"
#include "gather_fixture.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

using ferry::BoundedQueue;

FERRY_TEST(gather_batch_layout) {
  const auto l = BatchLayout::make({60, 16, 1, 0, 8}, 5);
  REQUIRE(l.offsets.size() == 5u);
  EXPECT_EQ(l.offsets[0], 0);
  EXPECT_EQ(l.offsets[1], 320);  // 300 rounded up to 64
  EXPECT_EQ(l.offsets[2], 448);  // 320 + 80 -> 448
  EXPECT_EQ(l.offsets[3], 512);  // 448 + 5 -> 512
  EXPECT_EQ(l.offsets[4], 512);  // an empty column takes no room
  EXPECT_EQ(l.total_bytes, 576);
  const auto e = BatchLayout::make({60}, 0);
  EXPECT_EQ(e.total_bytes, 0);
}

FERRY_TEST(gather_in_order_bytes_match_source) {
  const auto order = run_many_batches(/*in_order=*/true, 300, /*hold_every=*/0);
  REQUIRE(order.size() == 300u);
  for (size_t i = 0; i < order.size(); ++i) {
    REQUIRE(order[i] == static_cast<int64_t>(i), ": in order, position ", i, " got seq ", order[i]);
  }
}

FERRY_TEST(gather_as_ready_delivers_each_batch_once) {
  const auto order = run_many_batches(/*in_order=*/false, 300, /*hold_every=*/0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(sorted.size() == 300u);
  for (size_t i = 0; i < sorted.size(); ++i) REQUIRE(sorted[i] == static_cast<int64_t>(i));
}

FERRY_TEST(gather_held_batches_are_never_overwritten) {
  run_many_batches(/*in_order=*/true, 200, /*hold_every=*/3);
  run_many_batches(/*in_order=*/false, 200, /*hold_every=*/2);
}

FERRY_TEST(gather_in_order_waits_for_a_slow_batch) {
  // Batch 0 is held in the buffer factory; batch 1 completes first but is delivered
  // second. (Capacity 0: the factory runs outside the ring's lock.)
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 5);
  REQUIRE(slow != batch_bytes(fx, 3));
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  const std::vector<int64_t> b0 = {0, 1, 2, 3, 4}, b1 = {-1, 50, 41};
  EXPECT_EQ(p.submit(b0), 0);
  EXPECT_EQ(p.submit(b1), 1);
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1 && f->calls.load() == 2; }));
  // Batch 1 is ready (its factory call returned); give finish() a moment.
  sleep_ms(20);
  EXPECT(!p.next(0.05).has_value(), ": in order, a batch was delivered before batch 0");
  f->gate.open();
  auto first = p.next(kPatience);
  REQUIRE(first.has_value());
  EXPECT_EQ(first->seq, 0);
  VERIFY_BATCH(fx, *first, b0);
  auto second = p.next(kPatience);
  REQUIRE(second.has_value());
  EXPECT_EQ(second->seq, 1);
  VERIFY_BATCH(fx, *second, b1);
}

FERRY_TEST(gather_as_ready_does_not_wait_for_a_slow_batch) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 5);
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/false);
  const std::vector<int64_t> b0 = {0, 1, 2, 3, 4}, b1 = {-1, 50, 41};
  p.submit(b0);
  p.submit(b1);
  auto first = p.next(kPatience);
  REQUIRE(first.has_value(), ": batch 1 was not delivered while batch 0 was stuck");
  EXPECT_EQ(first->seq, 1);
  VERIFY_BATCH(fx, *first, b1);
  EXPECT(!p.next(0.05).has_value());
  f->gate.open();
  auto second = p.next(kPatience);
  REQUIRE(second.has_value());
  EXPECT_EQ(second->seq, 0);
  VERIFY_BATCH(fx, *second, b0);
}

FERRY_TEST(gather_rejected_index_position) {
  GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  const int64_t n = fx.length();
  GatherPipeline p(fx.plan(), fx.arrays(), 3, 8, ring, /*in_order=*/true);
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> cases = {
      {{0, 1, n, 2}, 2},
      {{-n - 1}, 0},
      {{5, -n, n - 1, n + 7, -n - 1}, 3},
      {{3, 4, 5}, -1},  // a good batch between rejected ones
      {{n - 1, -n, 1000000}, 2},
  };
  for (const auto& c : cases) p.submit(c.first);
  for (size_t k = 0; k < cases.size(); ++k) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    EXPECT_EQ(b->seq, static_cast<int64_t>(k));
    if (cases[k].second < 0) {
      VERIFY_BATCH(fx, *b, cases[k].first);
    } else {
      EXPECT_EQ(b->rejected_position, cases[k].second);
      EXPECT(!b->buffer, ": a rejected batch holds a buffer");
      EXPECT(b->error.empty());
    }
    p.release(*b);
  }
  // A Subset's stored index the child rejects is reported at its position too.
  fx.ref = ref_concat({ref_subset(ref_leaf(0, 50), {0, 50, -51, 49}), ref_leaf(1, 37)});
  GatherPipeline q(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/false);
  q.submit({0, 3, 1});
  q.submit({4, 2});
  std::map<int64_t, int64_t> rejected;
  for (int k = 0; k < 2; ++k) {
    auto b = q.next(kPatience);
    REQUIRE(b.has_value());
    rejected[b->seq] = b->rejected_position;
  }
  EXPECT_EQ(rejected[0], 2);
  EXPECT_EQ(rejected[1], 1);
}

FERRY_TEST(gather_empty_batch_is_rejected) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  EXPECT_EQ(p.submit({}), 0);
  EXPECT_EQ(p.submit({7}), 1);
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  EXPECT_EQ(b->seq, 0);
  EXPECT_EQ(b->rejected_position, 0);
  EXPECT_EQ(b->rows, 0);
  EXPECT(!b->buffer);
  auto c = p.next(kPatience);
  REQUIRE(c.has_value());
  VERIFY_BATCH(fx, *c, std::vector<int64_t>{7});
}

FERRY_TEST(gather_factory_failure_becomes_batch_error) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t throws = batch_bytes(fx, 4), short_ = batch_bytes(fx, 6);
  REQUIRE(throws != short_ && throws != batch_bytes(fx, 2));
  f->throw_if = [throws](size_t n) { return static_cast<int64_t>(n) == throws; };
  f->short_if = [short_](size_t n) { return static_cast<int64_t>(n) == short_; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  p.submit({0, 1, 2, 3});
  p.submit({0, 1, 2, 3, 4, 5});
  p.submit({8, 9});
  auto a = p.next(kPatience);
  REQUIRE(a.has_value());
  EXPECT(a->error.find("no memory") != std::string::npos, ": error was \"", a->error, "\"");
  EXPECT(!a->buffer);
  EXPECT_EQ(a->rejected_position, -1);
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  EXPECT(b->error.find("too little") != std::string::npos, ": error was \"", b->error, "\"");
  EXPECT(!b->buffer);
  auto c = p.next(kPatience);
  REQUIRE(c.has_value());
  VERIFY_BATCH(fx, *c, std::vector<int64_t>({8, 9}));
}

// The transfer step runs on each filled batch in a gather thread; what it makes arrives
// with the batch, and an exception it throws becomes the batch's error, its slot freed.
FERRY_TEST(gather_transfer_step_payload_and_errors) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(6, factory_of(f));
  const auto main_thread = std::this_thread::get_id();
  std::atomic<bool> ran_on_main{false};
  ferry::TransferStep step = [&](Batch& b) {
    if (std::this_thread::get_id() == main_thread) ran_on_main = true;
    if (b.rows == 3) throw std::runtime_error("copy failed: device gone");
    // the step sees the filled bytes: it keeps a copy of column 0 as its "output"
    const uint8_t* col = b.buffer->data() + b.layout.offsets[0];
    b.transfer = std::make_shared<std::vector<uint8_t>>(
        col, col + fx.row_bytes()[0] * b.rows);
  };
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true, step);
  const std::vector<int64_t> ok = {5, 60, -1, 7}, bad = {1, 2, 3};
  p.submit(ok);
  p.submit(bad);
  p.submit(ok);
  for (int k = 0; k < 3; ++k) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    if (k == 1) {
      EXPECT(b->error.find("device gone") != std::string::npos, ": error was \"", b->error, "\"");
      EXPECT(!b->buffer && !b->transfer);
      continue;
    }
    VERIFY_BATCH(fx, *b, ok);
    REQUIRE(b->transfer != nullptr);
    const auto& out = *std::static_pointer_cast<std::vector<uint8_t>>(b->transfer);
    EXPECT(out == expected_column(fx, ok, 0), ": the step's output differs from the source");
    p.release(*b);
  }
  EXPECT(!ran_on_main.load(), ": the transfer step ran on the consumer's thread");
  // Every slot went back, the failed batch's too: as many claims as there are slots are
  // served without making another one.
  const size_t slots = ring->slots();
  std::vector<std::shared_ptr<Buffer>> claims;
  for (size_t k = 0; k < slots; ++k) claims.push_back(ring->acquire(1));
  EXPECT(ring->slots() == slots, ": a slot was never returned (", ring->slots(), " after ",
         slots, " claims)");
}

// An asynchronous copy (as to a device): the step starts it and keeps the slot in use
// until it completed; the consumer releases the batch at once. A slot reused before its
// copy completed would show as a copy that differs from the source.
FERRY_TEST(gather_slot_not_reused_before_its_transfer_completed) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(3, factory_of(f));
  struct Copy {
    std::shared_ptr<Buffer> from;
    int64_t offset, bytes;
    std::vector<uint8_t> out;
    std::atomic<bool> done{false};
  };
  BoundedQueue<std::shared_ptr<Copy>> engine_queue(64);
  std::thread engine([&] {  // a slow "copy engine": copies late, then frees the slot
    while (auto c = engine_queue.pop()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const uint8_t* src = (*c)->from->data() + (*c)->offset;
      (*c)->out.assign(src, src + (*c)->bytes);
      (*c)->done = true;
      as_test_buffer((*c)->from)->drop();
    }
  });
  struct StopEngine {  // also when a REQUIRE below throws
    BoundedQueue<std::shared_ptr<Copy>>& queue;
    std::thread& thread;
    ~StopEngine() {
      queue.close();
      if (thread.joinable()) thread.join();
    }
  } stop_engine{engine_queue, engine};
  ferry::TransferStep step = [&](Batch& b) {
    auto c = std::make_shared<Copy>();
    c->from = b.buffer;
    c->offset = b.layout.offsets[0];
    c->bytes = fx.row_bytes()[0] * b.rows;
    as_test_buffer(b.buffer)->hold();  // in use until the copy completed
    b.transfer = c;
    if (!engine_queue.push(c)) throw std::runtime_error("the copy engine stopped");
  };
  std::vector<std::pair<std::shared_ptr<Copy>, std::vector<int64_t>>> copies;
  {
    GatherPipeline p(fx.plan(), fx.arrays(), 3, 3, ring, /*in_order=*/false, step);
    std::mt19937 rng(7);
    std::map<int64_t, std::vector<int64_t>> pending;
    int submitted = 0;
    constexpr int kBatches = 60;
    while (submitted < kBatches || !pending.empty()) {
      while (submitted < kBatches && pending.size() < 3) {
        auto idx = random_batch(rng, fx.length(), 40);
        pending[p.submit(idx)] = idx;
        ++submitted;
      }
      auto b = p.next(kPatience);
      REQUIRE(b.has_value() && b->error.empty());
      copies.emplace_back(std::static_pointer_cast<Copy>(b->transfer), pending[b->seq]);
      pending.erase(b->seq);
      p.release(*b);  // at once, before the copy is done
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (const auto& [c, idx] : copies) {
    while (!c->done.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(c->done.load(), " a copy never completed");
    EXPECT(c->out == expected_column(fx, idx, 0), ": a slot was refilled before its copy");
  }
  EXPECT(ring->untracked_allocations() > 0,
         ": the copies never outlasted the ring (the test did not test reuse under load)");
}

FERRY_TEST(gather_max_in_flight_is_enforced) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 2, ring, /*in_order=*/true);
  p.submit({0});
  p.submit({1});
  EXPECT_EQ(p.in_flight(), 2);
  EXPECT_THROWS(p.submit({2}), "in flight");
  EXPECT_EQ(p.in_flight(), 2);
  auto a = p.next(kPatience);
  REQUIRE(a.has_value());
  EXPECT_EQ(a->seq, 0);
  p.release(*a);
  EXPECT_EQ(p.in_flight(), 1);
  EXPECT_EQ(p.submit({2}), 2);  // the failed submit used no sequence number
  EXPECT_THROWS(p.submit({3}), "in flight");
  for (int64_t want : {1, 2}) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    EXPECT_EQ(b->seq, want);
    VERIFY_BATCH(fx, *b, std::vector<int64_t>{want});
    p.release(*b);
  }
}

FERRY_TEST(gather_next_without_batch_throws_and_times_out) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  // Nothing submitted: an error, not a wait (with or without a timeout).
  EXPECT_THROWS(p.next(0.05), "no batch in flight");
  EXPECT_THROWS(p.next(0), "no batch in flight");
  p.submit({1, 2, 3});
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  const auto t0 = Clock::now();
  auto none = p.next(0.05);
  const double waited = seconds_since(t0);
  EXPECT(!none.has_value(), ": next() returned a batch still being gathered");
  EXPECT(waited >= 0.045, ": next(0.05) returned after ", waited, " s");
  EXPECT(waited < kPrompt, ": next(0.05) took ", waited, " s");
  EXPECT_EQ(p.in_flight(), 1);
  f->gate.open();
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  VERIFY_BATCH(fx, *b, std::vector<int64_t>({1, 2, 3}));
  p.release(*b);
  EXPECT_EQ(p.in_flight(), 0);
  EXPECT_THROWS(p.next(0.05), "no batch in flight");
}

FERRY_TEST(gather_constructor_checks) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f));
  EXPECT_THROWS(GatherPipeline(fx.plan(), {}, 1, 1, ring, true), "at least one leaf");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 1, 1, nullptr, true), "staging ring");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 1, 0, ring, true), "max_in_flight");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 0, 1, ring, true), "at least one thread");
  auto fewer = fx.arrays();
  fewer[1].pop_back();
  EXPECT_THROWS(GatherPipeline(fx.plan(), fewer, 1, 1, ring, true), "numbers of columns");
  auto other = fx.arrays();
  const View wide = make_view({37, 4, 5}, {80, 20, 4}, 4, 1);
  other[1][0] = wide.array();
  EXPECT_THROWS(GatherPipeline(fx.plan(), other, 1, 1, ring, true), "different sizes");
  GatherPipeline ok(fx.plan(), fx.arrays(), 3, 5, ring, false);
  EXPECT_EQ(ok.num_threads(), 3u);
  EXPECT(ok.row_bytes() == std::vector<int64_t>({60, 16}));
  EXPECT_EQ(ok.in_flight(), 0);
}
