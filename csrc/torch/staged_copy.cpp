#include "staged_copy.h"

#include <c10/core/DeviceGuard.h>

#include "../core/check.h"
#include "tensor_buffer.h"

namespace ferry {
namespace {
constexpr int64_t kAlign = 64;
int64_t align_up(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

StagedCopy::StagedCopy(c10::Device device, size_t slots, std::shared_ptr<MemoryBudget> budget)
    : transfer_(device),
      ring_(std::make_shared<StagingRing>(
          slots, tensor_buffer_factory(/*pinned=*/true, std::move(budget)))) {}

std::vector<at::Tensor> StagedCopy::to_device(const std::vector<at::Tensor>& host) {
  // Events of earlier copies are released in here (acquire() asks slots whether they are
  // in use): on our device, not on whatever device the consumer's thread has current.
  c10::DeviceGuard on_device(transfer_.device());
  for (const at::Tensor& t : host) {
    FERRY_CHECK(t.device().is_cpu() && t.layout() == at::kStrided,
                "only strided CPU tensors are staged for a device copy");
  }
  bool all_pinned = true;
  for (const at::Tensor& t : host) all_pinned = all_pinned && t.is_pinned();
  if (all_pinned) {  // torch's host allocator keeps their memory until the copies are done
    return transfer_.hand_over(transfer_.start(host));
  }
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const at::Tensor& t : host) {
    offsets.push_back(total);
    total = align_up(total + t.numel() * static_cast<int64_t>(t.element_size()));
  }
  std::shared_ptr<Buffer> slot = ring_->acquire(static_cast<size_t>(std::max<int64_t>(total, 1)));
  auto& buffer = static_cast<TensorBuffer&>(*slot);
  DeviceTransfer::Copy copy;
  try {
    std::vector<at::Tensor> staged;
    staged.reserve(host.size());
    for (size_t i = 0; i < host.size(); ++i) {
      staged.push_back(buffer.view(offsets[i], host[i].scalar_type(), host[i].sizes()));
      staged.back().copy_(host[i]);
    }
    copy = transfer_.start(staged);
  } catch (...) {
    ring_->release(slot.get());
    throw;
  }
  buffer.keep_until(copy.done);
  ring_->release(slot.get());  // in use until the copy completed
  return transfer_.hand_over(std::move(copy));
}

}  // namespace ferry
