#include "shared_ring_mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../core/check.h"
#include "../core/slot_layout.h"

namespace ferry {
namespace {

// The bytes a strided tensor spans, checked to stay inside its slot.
int64_t checked_extent(const TensorRef& ref, size_t slot_bytes) {
  const int64_t itemsize = static_cast<int64_t>(c10::elementSize(ref.dtype));
  FERRY_CHECK(ref.offset >= 0 && ref.offset % itemsize == 0, "tensor description: offset ",
              ref.offset, " not aligned to its item size ", itemsize);
  const int64_t extent = strided_extent(ref.sizes, ref.strides, itemsize);
  FERRY_CHECK(ref.offset + extent <= static_cast<int64_t>(slot_bytes),
              "tensor description reaches past its slot (", ref.offset, " + ", extent, " > ",
              slot_bytes, ")");
  return extent;
}

// Copies of the tensors `refs` describe in the slot at `base`. Tensors whose bytes
// overlap (views of one another) are views of one copy of the bytes they span together,
// so they still overlap; the others are copied each on its own, so that a tensor the
// user keeps does not keep the rest of its batch. Pinned: from torch's host allocator.
std::vector<at::Tensor> copy_out(const uint8_t* base, const std::vector<TensorRef>& refs,
                                 const std::vector<int64_t>& extents, bool pinned) {
  std::vector<at::Tensor> out(refs.size());
  std::vector<int64_t> starts;
  for (size_t i = 0; i < refs.size(); ++i) {
    starts.push_back(refs[i].offset);
    if (extents[i] == 0) {
      out[i] = at::empty_strided(refs[i].sizes, refs[i].strides,
                                 at::TensorOptions().dtype(refs[i].dtype).pinned_memory(pinned));
    }
  }
  for (const OverlapCluster& c : overlap_clusters(starts, extents)) {
    at::Tensor bytes =
        at::empty({c.hi - c.lo}, at::TensorOptions().dtype(at::kByte).pinned_memory(pinned));
    std::memcpy(bytes.data_ptr(), base + c.lo, static_cast<size_t>(c.hi - c.lo));
    for (size_t i : c.members) {
      const TensorRef& ref = refs[i];
      const int64_t itemsize = static_cast<int64_t>(c10::elementSize(ref.dtype));
      out[i] = at::empty({0}, at::TensorOptions().dtype(ref.dtype))
                   .set_(bytes.storage(), (ref.offset - c.lo) / itemsize, ref.sizes, ref.strides);
    }
  }
  return out;
}

// Shared by the views of one batch: the last one to die frees the slot.
class SlotLease {
 public:
  SlotLease(std::shared_ptr<SharedRingMapping> mapping, uint32_t slot)
      : mapping_(std::move(mapping)), slot_(slot) {}
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease() {
    if (mapping_->mapped_here()) mapping_->ring().set(slot_, SlotState::kFree);
  }

 private:
  std::shared_ptr<SharedRingMapping> mapping_;
  uint32_t slot_;
};

}  // namespace

void* SharedRingMapping::map(int fd, size_t offset, size_t bytes) {
  FERRY_CHECK(offset % static_cast<size_t>(::sysconf(_SC_PAGESIZE)) == 0, "ring offset ", offset,
              " is not page-aligned");
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                      static_cast<off_t>(offset));
  FERRY_CHECK(base != MAP_FAILED, "mmap of ", bytes, " bytes of shared ring failed: ",
              std::strerror(errno));
  // Processes forked later (other loaders' workers) must not inherit the mapping: they
  // would keep its memory alive as long as they live.
  ::madvise(base, bytes, MADV_DONTFORK);
  return base;
}

SharedRingMapping::SharedRingMapping(void* base, size_t bytes, SharedRingView ring,
                                     std::unique_ptr<BudgetCharge> charge)
    : base_(base), bytes_(bytes), ring_(ring), owner_pid_(::getpid()), charge_(std::move(charge)) {}

bool SharedRingMapping::mapped_here() const { return ::getpid() == owner_pid_; }

void SharedRingMapping::release_unheld() {
  if (!mapped_here()) return;
  for (uint32_t i = 0; i < ring_.nslots(); ++i) {
    if (ring_.get(i) != SlotState::kHeld) {
      ::madvise(ring_.slot(i), ring_.slot_bytes(), MADV_REMOVE);
    }
  }
}

std::shared_ptr<SharedRingMapping> SharedRingMapping::create(int fd, size_t offset,
                                                             size_t slot_bytes, uint32_t nslots) {
  const size_t bytes = SharedRingView::bytes_for(slot_bytes, nslots);
  struct stat st;
  FERRY_CHECK(::fstat(fd, &st) == 0, "fstat of shared ring failed: ", std::strerror(errno));
  if (static_cast<size_t>(st.st_size) < offset + bytes) {
    FERRY_CHECK(::ftruncate(fd, static_cast<off_t>(offset + bytes)) == 0,
                "sizing the shared ring file to ", offset + bytes, " bytes failed: ",
                std::strerror(errno));
  }
  auto charge = std::make_unique<BudgetCharge>(MemoryBudget::unlimited(), bytes,
                                               MemoryKind::kShared, "a shared ring");
  void* base = map(fd, offset, bytes);
  SharedRingView ring = SharedRingView::init(base, slot_bytes, nslots);
  return std::shared_ptr<SharedRingMapping>(
      new SharedRingMapping(base, bytes, ring, std::move(charge)));
}

std::shared_ptr<SharedRingMapping> SharedRingMapping::attach(
    int fd, size_t offset, const std::shared_ptr<MemoryBudget>& budget) {
  struct stat st;
  FERRY_CHECK(::fstat(fd, &st) == 0, "fstat of shared ring failed: ", std::strerror(errno));
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  FERRY_CHECK(file_bytes >= offset + SharedRingView::kHeaderBytes,
              "the worker has not created a ring at offset ", offset);
  // The header says how large this ring is; map exactly that.
  void* head = map(fd, offset, SharedRingView::kHeaderBytes);
  size_t bytes;
  try {
    const SharedRingView peek = SharedRingView::attach(head, file_bytes - offset);
    bytes = SharedRingView::bytes_for(peek.slot_bytes(), peek.nslots());
  } catch (...) {
    ::munmap(head, SharedRingView::kHeaderBytes);
    throw;
  }
  ::munmap(head, SharedRingView::kHeaderBytes);
  auto charge = std::make_unique<BudgetCharge>(budget ? budget : MemoryBudget::unlimited(), bytes,
                                               MemoryKind::kShared, "a worker's shared ring");
  void* base = map(fd, offset, bytes);
  try {
    SharedRingView ring = SharedRingView::attach(base, bytes);
    return std::shared_ptr<SharedRingMapping>(
        new SharedRingMapping(base, bytes, ring, std::move(charge)));
  } catch (...) {
    ::munmap(base, bytes);
    throw;
  }
}

SharedRingMapping::~SharedRingMapping() {
  if (mapped_here()) ::munmap(base_, bytes_);
}

at::Tensor SharedRingMapping::slot_tensor(uint32_t slot) {
  uint8_t* data = ring_.slot(slot);
  auto keep = shared_from_this();
  return at::from_blob(
      data, {static_cast<int64_t>(ring_.slot_bytes())}, [keep](void*) {},
      at::TensorOptions().dtype(at::kByte));
}

std::vector<at::Tensor> SharedRingMapping::take(uint32_t slot, const std::vector<TensorRef>& refs,
                                                bool copy, bool pinned) {
  FERRY_CHECK(copy || !pinned, "pinned tensors are copies");
  uint8_t* base = ring_.slot(slot);
  std::vector<int64_t> extents;
  extents.reserve(refs.size());
  for (const auto& ref : refs) extents.push_back(checked_extent(ref, ring_.slot_bytes()));
  // Only a published batch may be taken, and only once: two sets of tensors sharing one
  // slot's memory would be silent corruption.
  FERRY_CHECK(ring_.transition(slot, SlotState::kReady, SlotState::kHeld), "slot ", slot,
              " holds no published batch (state ", static_cast<int>(ring_.get(slot)), ")");
  std::vector<at::Tensor> out;
  out.reserve(refs.size());
  if (copy) {
    try {
      out = copy_out(base, refs, extents, pinned);
    } catch (...) {
      ring_.set(slot, SlotState::kFree);
      throw;
    }
    ring_.set(slot, SlotState::kFree);
    return out;
  }
  auto lease = std::make_shared<SlotLease>(shared_from_this(), slot);
  for (const auto& ref : refs) {
    out.push_back(at::from_blob(base + ref.offset, ref.sizes, ref.strides,
                                [lease](void*) {}, at::TensorOptions().dtype(ref.dtype)));
  }
  return out;
}

}  // namespace ferry
