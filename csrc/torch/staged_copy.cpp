#include "staged_copy.h"

#include <c10/core/DeviceGuard.h>

#include "../core/check.h"
#include "../core/slot_layout.h"
#include "tensor_buffer.h"

namespace ferry {
namespace {

// `t`'s staging place in `buffer`, laid out as torch's t.to(device) lays out its result
// (preserve_format: t's own strides when it is dense and non-overlapping, such as
// channels_last or a permutation, else contiguous in its suggested memory format), so
// that the device tensor copied from it has the strides torch's would have. Either way
// it spans t.numel() items.
at::Tensor staging_view(TensorBuffer& buffer, int64_t byte_offset, const at::Tensor& t) {
  const at::Tensor layout = at::empty_like(t, t.options().device(at::kMeta));
  return buffer.view(byte_offset, t.scalar_type(), layout.sizes(), layout.strides());
}
}  // namespace

StagedCopy::StagedCopy(c10::Device device, size_t slots, std::shared_ptr<MemoryBudget> budget)
    : transfer_(device),
      ring_(std::make_shared<StagingRing>(
          slots, tensor_buffer_factory(/*pinned=*/true, std::move(budget)),
          StagingRing::WhenFull::kWait)) {}

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
      staged.push_back(staging_view(buffer, offsets[i], host[i]));
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
