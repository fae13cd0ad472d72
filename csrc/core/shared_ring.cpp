#include "shared_ring.h"

#include <atomic>
#include <cstring>

#include "check.h"

namespace ferry {
namespace {

struct Header {
  uint64_t magic;
  uint64_t slot_bytes;
  uint32_t nslots;
  uint32_t reserved;
  int32_t states[SharedRingView::kMaxSlots];
};
static_assert(sizeof(Header) <= SharedRingView::kHeaderBytes, "ring header too large");
static_assert(std::atomic_ref<int32_t>::is_always_lock_free,
              "slot states must be lock-free to work across processes");

}  // namespace

size_t SharedRingView::bytes_for(size_t slot_bytes, uint32_t nslots) {
  return kHeaderBytes + slot_bytes * nslots;
}

SharedRingView SharedRingView::init(void* base, size_t slot_bytes, uint32_t nslots) {
  FERRY_CHECK(nslots > 0 && nslots <= kMaxSlots, "a shared ring has 1 to ", kMaxSlots,
              " slots, not ", nslots);
  FERRY_CHECK(slot_bytes % 64 == 0, "slot size must be a multiple of 64, got ", slot_bytes);
  auto* h = static_cast<Header*>(base);
  std::memset(h, 0, sizeof(Header));
  h->slot_bytes = slot_bytes;
  h->nslots = nslots;
  std::atomic_ref<uint64_t>(h->magic).store(kMagic, std::memory_order_release);
  return SharedRingView(static_cast<uint8_t*>(base), slot_bytes, nslots);
}

SharedRingView SharedRingView::attach(void* base, size_t mapped_bytes) {
  FERRY_CHECK(mapped_bytes >= kHeaderBytes, "shared ring mapping too small: ", mapped_bytes);
  auto* h = static_cast<Header*>(base);
  FERRY_CHECK(std::atomic_ref<uint64_t>(h->magic).load(std::memory_order_acquire) == kMagic,
              "no ferry ring in this shared memory");
  FERRY_CHECK(h->nslots > 0 && h->nslots <= kMaxSlots, "corrupt ring header: ", h->nslots,
              " slots");
  FERRY_CHECK(bytes_for(h->slot_bytes, h->nslots) <= mapped_bytes,
              "shared ring larger than its mapping");
  return SharedRingView(static_cast<uint8_t*>(base), h->slot_bytes, h->nslots);
}

uint8_t* SharedRingView::slot(uint32_t i) const {
  FERRY_CHECK(i < nslots_, "slot ", i, " out of range (", nslots_, " slots)");
  return base_ + kHeaderBytes + static_cast<size_t>(i) * slot_bytes_;
}

int32_t* SharedRingView::state_word(uint32_t i) const {
  FERRY_CHECK(i < nslots_, "slot ", i, " out of range (", nslots_, " slots)");
  return &reinterpret_cast<Header*>(base_)->states[i];
}

int32_t SharedRingView::claim() {
  for (uint32_t i = 0; i < nslots_; ++i) {
    int32_t expected = static_cast<int32_t>(SlotState::kFree);
    if (std::atomic_ref<int32_t>(*state_word(i))
            .compare_exchange_strong(expected, static_cast<int32_t>(SlotState::kFilling),
                                     std::memory_order_acquire)) {
      return static_cast<int32_t>(i);
    }
  }
  return -1;
}

bool SharedRingView::transition(uint32_t i, SlotState from, SlotState to) {
  int32_t expected = static_cast<int32_t>(from);
  return std::atomic_ref<int32_t>(*state_word(i))
      .compare_exchange_strong(expected, static_cast<int32_t>(to), std::memory_order_acq_rel);
}

void SharedRingView::set(uint32_t i, SlotState state) {
  std::atomic_ref<int32_t>(*state_word(i)).store(static_cast<int32_t>(state),
                                                 std::memory_order_release);
}

SlotState SharedRingView::get(uint32_t i) const {
  return static_cast<SlotState>(
      std::atomic_ref<int32_t>(*state_word(i)).load(std::memory_order_acquire));
}

uint32_t SharedRingView::count(SlotState state) const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < nslots_; ++i) n += get(i) == state;
  return n;
}

}  // namespace ferry
