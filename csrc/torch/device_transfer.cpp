#include "device_transfer.h"

#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>

#include "../core/check.h"

namespace ferry {
namespace {

c10::Device with_index(c10::Device device) {
  FERRY_CHECK(device.type() != c10::DeviceType::CPU, "a device transfer needs a device, not the CPU");
  if (device.has_index()) return device;
  c10::impl::VirtualGuardImpl guard(device.type());
  return c10::Device(device.type(), guard.getDevice().index());
}

}  // namespace

DeviceTransfer::DeviceTransfer(c10::Device device)
    : device_(with_index(device)),
      guard_(device_.type()),
      stream_(guard_.getStreamFromGlobalPool(device_, /*isHighPriority=*/false)) {}

DeviceTransfer::Copy DeviceTransfer::start(const std::vector<at::Tensor>& host) const {
  Copy copy;
  copy.outputs.reserve(host.size());
  c10::StreamGuard on_copy_stream(stream_);  // this thread's current stream, for the copies
  for (const at::Tensor& t : host) {
    copy.outputs.push_back(t.to(device_, /*non_blocking=*/true));
  }
  copy.done = std::make_shared<c10::Event>(device_.type());
  copy.done->record(stream_);
  return copy;
}

std::vector<at::Tensor> DeviceTransfer::hand_over(Copy copy) const {
  // The event's calls switch to its device and back to the thread's current one with a
  // checked set-device, which would create a context on a device the process never used;
  // a guard on our device makes that a no-op and restores without creating one.
  c10::DeviceGuard on_device(device_);
  const c10::Stream consumer = guard_.getStream(device_);
  copy.done->block(consumer);
  for (const at::Tensor& t : copy.outputs) t.record_stream(consumer);
  return std::move(copy.outputs);
}

}  // namespace ferry
