// A ring of batch slots in memory shared between processes (one per worker process):
// a header page with each slot's state, then `nslots` slots of `slot_bytes` bytes.
//
// Each slot has one owner at a time, so states move by single-writer steps:
//   FREE -> FILLING          the worker claims it (compare-and-swap, acquire)
//   FILLING -> READY         the worker published a batch in it (release)
//   READY -> HELD            the consumer made views of it that the user holds
//   READY|HELD -> FREE       the consumer is done with its memory (release)
// Functions here are safe from any thread of any process mapping the ring.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

enum class SlotState : int32_t { kFree = 0, kFilling = 1, kReady = 2, kHeld = 3 };

class SharedRingView {
 public:
  static constexpr uint64_t kMagic = 0x6665727279726e67ULL;  // "ferryrng"
  static constexpr uint32_t kMaxSlots = 256;
  static constexpr size_t kHeaderBytes = 4096;

  // Bytes a ring of this shape needs.
  static size_t bytes_for(size_t slot_bytes, uint32_t nslots);

  // Writes a fresh header (all slots FREE) into `base`, which has bytes_for(...) bytes.
  static SharedRingView init(void* base, size_t slot_bytes, uint32_t nslots);
  // Reads a header written by init(); throws when `base` holds no valid ring of at most
  // `mapped_bytes` bytes.
  static SharedRingView attach(void* base, size_t mapped_bytes);

  size_t slot_bytes() const { return slot_bytes_; }
  uint32_t nslots() const { return nslots_; }
  uint8_t* slot(uint32_t i) const;

  // A FREE slot, now FILLING; -1 when none is free.
  int32_t claim();
  // Moves slot i from `from` to `to`; false (nothing changed) when it was not in `from`.
  bool transition(uint32_t i, SlotState from, SlotState to);
  void set(uint32_t i, SlotState state);
  SlotState get(uint32_t i) const;
  uint32_t count(SlotState state) const;

 private:
  SharedRingView(uint8_t* base, size_t slot_bytes, uint32_t nslots)
      : base_(base), slot_bytes_(slot_bytes), nslots_(nslots) {}
  int32_t* state_word(uint32_t i) const;

  uint8_t* base_;
  size_t slot_bytes_;
  uint32_t nslots_;
};

}  // namespace ferry
