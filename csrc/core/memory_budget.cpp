#include "memory_budget.h"

#include <cstdio>

#include "check.h"

namespace ferry {
namespace {
std::atomic<uint64_t> g_totals[2];
std::atomic<uint64_t>& total_of(MemoryKind kind) { return g_totals[static_cast<int>(kind)]; }
const char* name_of(MemoryKind kind) {
  return kind == MemoryKind::kPinned ? "page-locked" : "shared";
}
}  // namespace

void MemoryBudget::charge(uint64_t bytes, MemoryKind kind, const std::string& what) {
  uint64_t now = used_.load(std::memory_order_relaxed);
  for (;;) {
    if (limit_ != 0 && now + bytes > limit_) {
      FERRY_FAIL("ferry's memory budget is exhausted: ", what, " needs ", format_bytes(bytes),
                 " of ", name_of(kind), " memory, ", format_bytes(now),
                 " of the budget are in use and the limit is ", format_bytes(limit_),
                 " (memory_budget=", limit_,
                 "). Raise memory_budget, or lower prefetch_factor, the batch size or the "
                 "number of batches held at once");
    }
    if (used_.compare_exchange_weak(now, now + bytes, std::memory_order_relaxed)) break;
  }
  count_process_memory(kind, static_cast<int64_t>(bytes));
}

const std::shared_ptr<MemoryBudget>& MemoryBudget::unlimited() {
  static const auto* budget = new std::shared_ptr<MemoryBudget>(std::make_shared<MemoryBudget>(0));
  return *budget;  // leaked on purpose: charges may be refunded during static destruction
}

void MemoryBudget::refund(uint64_t bytes, MemoryKind kind) noexcept {
  used_.fetch_sub(bytes, std::memory_order_relaxed);
  count_process_memory(kind, -static_cast<int64_t>(bytes));
}

void count_process_memory(MemoryKind kind, int64_t delta) noexcept {
  total_of(kind).fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
}

uint64_t process_memory(MemoryKind kind) { return total_of(kind).load(std::memory_order_relaxed); }

BudgetCharge::BudgetCharge(std::shared_ptr<MemoryBudget> budget, uint64_t bytes,
                           MemoryKind kind, const std::string& what)
    : budget_(std::move(budget)), bytes_(bytes), kind_(kind) {
  FERRY_CHECK(budget_ != nullptr, "a charge needs a budget");
  budget_->charge(bytes_, kind_, what);
}

BudgetCharge::~BudgetCharge() { budget_->refund(bytes_, kind_); }

std::string format_bytes(uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof(out), unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return out;
}

}  // namespace ferry
