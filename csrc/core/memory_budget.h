// A loader's budget for the page-locked and shared memory ferry allocates (staging slots),
// and the process's running totals of both, for backend_info().
// Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ferry {

enum class MemoryKind { kPinned = 0, kShared = 1 };

class MemoryBudget {
 public:
  // limit 0: no limit (the allocations are still counted).
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}

  // Counts `bytes` of `kind`, or throws ferry::Error saying what was asked, what is in
  // use and the limit, when they would go beyond it (nothing is counted then).
  void charge(uint64_t bytes, MemoryKind kind, const std::string& what);
  void refund(uint64_t bytes, MemoryKind kind) noexcept;

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }

  // One process-wide budget without a limit, for allocations no loader limits.
  static const std::shared_ptr<MemoryBudget>& unlimited();

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

// Charges `bytes` on construction and refunds them on destruction.
class BudgetCharge {
 public:
  BudgetCharge(std::shared_ptr<MemoryBudget> budget, uint64_t bytes, MemoryKind kind,
               const std::string& what);
  ~BudgetCharge();
  BudgetCharge(const BudgetCharge&) = delete;
  BudgetCharge& operator=(const BudgetCharge&) = delete;

 private:
  std::shared_ptr<MemoryBudget> budget_;
  uint64_t bytes_;
  MemoryKind kind_;
};

// What the process holds now, all loaders together (charges count here too).
void count_process_memory(MemoryKind kind, int64_t delta) noexcept;
uint64_t process_memory(MemoryKind kind);

// "1.5 MiB": for messages.
std::string format_bytes(uint64_t bytes);

}  // namespace ferry
