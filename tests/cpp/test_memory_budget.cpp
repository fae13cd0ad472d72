// MemoryBudget: charges up to the limit, clear refusals, the process totals.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/memory_budget.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

// A budget counts charges up to its limit, refuses the one beyond with a message that
// says what was asked, what is in use and the limit, and counts nothing for it.
FERRY_TEST(budget_limits_charges_and_reports_the_process_total) {
  using ferry::MemoryKind;
  const uint64_t pinned0 = ferry::process_memory(MemoryKind::kPinned);
  const uint64_t shared0 = ferry::process_memory(MemoryKind::kShared);
  auto budget = std::make_shared<ferry::MemoryBudget>(1000);
  {
    ferry::BudgetCharge a(budget, 600, MemoryKind::kPinned, "slot a");
    EXPECT_EQ(budget->used(), 600u);
    EXPECT_EQ(ferry::process_memory(MemoryKind::kPinned), pinned0 + 600);
    std::string message;
    try {
      ferry::BudgetCharge b(budget, 401, MemoryKind::kShared, "slot b");
    } catch (const ferry::Error& e) {
      message = e.what();
    }
    EXPECT(message.find("slot b needs 401 B of shared memory") != std::string::npos, message);
    EXPECT(message.find("600 B of the budget are in use") != std::string::npos, message);
    EXPECT(message.find("memory_budget=1000") != std::string::npos, message);
    EXPECT_EQ(budget->used(), 600u);
    EXPECT_EQ(ferry::process_memory(MemoryKind::kShared), shared0);
    ferry::BudgetCharge c(budget, 400, MemoryKind::kShared, "slot c");  // exactly the limit
    EXPECT_EQ(budget->used(), 1000u);
  }
  EXPECT_EQ(budget->used(), 0u);
  EXPECT_EQ(ferry::process_memory(MemoryKind::kPinned), pinned0);
  EXPECT_EQ(ferry::process_memory(MemoryKind::kShared), shared0);
  // no limit: everything is counted, nothing refused
  auto unlimited = std::make_shared<ferry::MemoryBudget>(0);
  ferry::BudgetCharge big(unlimited, uint64_t{1} << 40, MemoryKind::kPinned, "big");
  EXPECT_EQ(unlimited->used(), uint64_t{1} << 40);
  EXPECT(ferry::format_bytes(1536) == "1.5 KiB", ferry::format_bytes(1536));
}

// Charges from many threads against one budget never go beyond its limit.
FERRY_TEST(budget_concurrent_charges_stay_within_the_limit) {
  auto budget = std::make_shared<ferry::MemoryBudget>(10 * 64);
  std::atomic<int> refused{0};
  std::atomic<uint64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        try {
          ferry::BudgetCharge c(budget, 64, ferry::MemoryKind::kPinned, "x");
          uint64_t now = budget->used(), seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
        } catch (const ferry::Error&) {
          ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT(peak.load() <= 10u * 64, ": peak ", peak.load());
  EXPECT_EQ(budget->used(), 0u);
}
