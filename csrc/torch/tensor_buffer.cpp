#include "tensor_buffer.h"

#include "../core/check.h"

namespace ferry {

namespace {
std::unique_ptr<BudgetCharge> charge_for(size_t nbytes, bool pinned,
                                         const std::shared_ptr<MemoryBudget>& budget) {
  if (!pinned || budget == nullptr) return nullptr;
  return std::make_unique<BudgetCharge>(budget, nbytes, MemoryKind::kPinned,
                                        "a page-locked staging slot");
}
}  // namespace

TensorBuffer::TensorBuffer(size_t nbytes, bool pinned,
                           const std::shared_ptr<MemoryBudget>& budget)
    : charge_(charge_for(nbytes, pinned, budget)),
      tensor_(at::empty({static_cast<int64_t>(nbytes)},
                        at::TensorOptions().dtype(at::kByte).pinned_memory(pinned))),
      pinned_(pinned) {}

bool TensorBuffer::in_use() const {
  {
    std::lock_guard<std::mutex> lock(copy_mutex_);
    if (copy_done_ && !copy_done_->query()) return true;
    copy_done_.reset();
  }
  if (pinned_) return tensor_.storage().use_count() > 1;
  return views_.load(std::memory_order_acquire) > 0;
}

bool TensorBuffer::wait_for_copies() {
  std::shared_ptr<const c10::Event> pending;
  {
    std::lock_guard<std::mutex> lock(copy_mutex_);
    pending = copy_done_;
  }
  if (pending) pending->synchronize();  // outside the lock: in_use() stays prompt
  return true;
}

void TensorBuffer::keep_until(std::shared_ptr<const c10::Event> copy_done) {
  std::lock_guard<std::mutex> lock(copy_mutex_);
  copy_done_ = std::move(copy_done);
}

at::Tensor TensorBuffer::view(int64_t byte_offset, at::ScalarType dtype, at::IntArrayRef sizes,
                              at::IntArrayRef given_strides) {
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(dtype));
  FERRY_CHECK(byte_offset % itemsize == 0, "column offset ", byte_offset,
              " is not aligned to its item size ", itemsize);
  FERRY_CHECK(given_strides.empty() || given_strides.size() == sizes.size(),
              "a view needs one stride per dimension");
  std::vector<int64_t> strides(given_strides.begin(), given_strides.end());
  if (strides.empty()) {
    strides.resize(sizes.size());
    int64_t stride = 1;
    for (size_t d = sizes.size(); d-- > 0;) {
      strides[d] = stride;
      stride *= sizes[d];
    }
  }
  if (pinned_) {
    return at::empty({0}, tensor_.options().dtype(dtype).pinned_memory(false))
        .set_(tensor_.storage(), byte_offset / itemsize, sizes, strides);
  }
  views_.fetch_add(1, std::memory_order_relaxed);
  auto self = shared_from_this();  // the memory outlives the ring while viewed
  try {
    return at::from_blob(
        data() + byte_offset, sizes, strides,
        [self](void*) { self->views_.fetch_sub(1, std::memory_order_release); },
        at::TensorOptions().dtype(dtype));
  } catch (...) {
    views_.fetch_sub(1, std::memory_order_release);
    throw;
  }
}

BufferFactory tensor_buffer_factory(bool pinned, std::shared_ptr<MemoryBudget> budget) {
  return [pinned, budget = std::move(budget)](size_t nbytes) -> std::shared_ptr<Buffer> {
    return std::make_shared<TensorBuffer>(nbytes, pinned, budget);
  };
}

}  // namespace ferry
