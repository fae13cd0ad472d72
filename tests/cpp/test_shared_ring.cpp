// SharedRingView: the slot ring in shared memory that worker processes fill.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "core/shared_ring.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

namespace {
// Anonymous shared memory, as a memfd mapping is between processes (survives fork).
struct SharedMemory {
  explicit SharedMemory(size_t n) : bytes(n) {
    base = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  ~SharedMemory() { ::munmap(base, bytes); }
  void* base;
  size_t bytes;
};
}  // namespace

FERRY_TEST(shared_ring_init_attach_and_layout) {
  const size_t slot_bytes = 4096;
  SharedMemory mem(ferry::SharedRingView::bytes_for(slot_bytes, 5));
  REQUIRE(mem.base != MAP_FAILED);
  EXPECT_THROWS(ferry::SharedRingView::attach(mem.base, mem.bytes), "no ferry ring");
  auto ring = ferry::SharedRingView::init(mem.base, slot_bytes, 5);
  auto seen = ferry::SharedRingView::attach(mem.base, mem.bytes);
  EXPECT_EQ(seen.slot_bytes(), slot_bytes);
  EXPECT_EQ(seen.nslots(), 5u);
  EXPECT(seen.slot(0) == ring.slot(0));
  EXPECT_EQ(static_cast<size_t>(seen.slot(4) - static_cast<uint8_t*>(mem.base)),
            ferry::SharedRingView::kHeaderBytes + 4 * slot_bytes);
  EXPECT_THROWS(seen.slot(5), "out of range");
  EXPECT_THROWS(ferry::SharedRingView::attach(mem.base, mem.bytes - 1), "larger than");
  EXPECT_THROWS(ferry::SharedRingView::init(mem.base, 100, 5), "multiple of 64");
  EXPECT_THROWS(ferry::SharedRingView::init(mem.base, 64, 0), "slots");
}

FERRY_TEST(shared_ring_claims_each_free_slot_once) {
  SharedMemory mem(ferry::SharedRingView::bytes_for(64, 3));
  auto ring = ferry::SharedRingView::init(mem.base, 64, 3);
  std::set<int32_t> claimed;
  for (int i = 0; i < 3; ++i) claimed.insert(ring.claim());
  EXPECT(claimed == (std::set<int32_t>{0, 1, 2}), " slots 0, 1 and 2");
  EXPECT_EQ(ring.claim(), -1);
  EXPECT_EQ(ring.count(ferry::SlotState::kFilling), 3u);
  ring.set(1, ferry::SlotState::kReady);
  ring.set(2, ferry::SlotState::kHeld);
  EXPECT_EQ(ring.claim(), -1);  // READY and HELD slots are not free
  ring.set(2, ferry::SlotState::kFree);
  EXPECT_EQ(ring.claim(), 2);
  EXPECT(ring.get(1) == ferry::SlotState::kReady);
}

FERRY_TEST(shared_ring_concurrent_claims_are_exclusive) {
  SharedMemory mem(ferry::SharedRingView::bytes_for(64, 64));
  ferry::SharedRingView::init(mem.base, 64, 64);  // the threads attach to it
  std::vector<std::thread> threads;
  std::vector<std::vector<int32_t>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto mine = ferry::SharedRingView::attach(mem.base, mem.bytes);
      for (int32_t s; (s = mine.claim()) >= 0;) got[t].push_back(s);
    });
  }
  for (auto& th : threads) th.join();
  std::vector<int32_t> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  std::vector<int32_t> expected(64);
  for (int32_t i = 0; i < 64; ++i) expected[i] = i;
  EXPECT(all == expected, "every slot claimed exactly once");
}

FERRY_TEST(shared_ring_works_across_a_fork) {
  // The child (a worker) claims a slot, fills it and publishes it; the parent (the
  // consumer) sees the bytes once the state says READY, frees the slot, and the child
  // can claim it again.
  SharedMemory mem(ferry::SharedRingView::bytes_for(128, 1));
  auto ring = ferry::SharedRingView::init(mem.base, 128, 1);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto worker = ferry::SharedRingView::attach(mem.base, mem.bytes);
    for (int round = 0; round < 2; ++round) {
      int32_t s;
      while ((s = worker.claim()) < 0) std::this_thread::yield();
      std::memset(worker.slot(s), 0x40 + round, 128);
      worker.set(s, ferry::SlotState::kReady);
    }
    ::_exit(0);
  }
  for (int round = 0; round < 2; ++round) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ring.get(0) != ferry::SlotState::kReady && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    REQUIRE(ring.get(0) == ferry::SlotState::kReady, "the child published nothing");
    const uint8_t* p = ring.slot(0);
    EXPECT(std::all_of(p, p + 128, [&](uint8_t b) { return b == 0x40 + round; }));
    ring.set(0, ferry::SlotState::kFree);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
