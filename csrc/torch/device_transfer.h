// Copies staged batches to a device on a dedicated stream and hands them to the consumer's
// stream without a host synchronisation. Device-generic (c10 streams and events): built
// against a CPU-only torch, it drives CUDA at run time when torch has it.
// Thread-safe: start() from any producer thread, hand_over() from the consumer's thread.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>
#include <vector>

namespace ferry {

class DeviceTransfer {
 public:
  // Copies run on a stream of the device's pool, not on the consumer's current stream.
  explicit DeviceTransfer(c10::Device device);

  struct Copy {
    std::vector<at::Tensor> outputs;      // on the device, written by the copy stream
    std::shared_ptr<c10::Event> done;     // recorded on the copy stream after the copies
  };

  // Enqueues non-blocking copies of `host` (page-locked CPU tensors) to the device. The
  // host memory must stay untouched until `done` completed (see TensorBuffer::keep_until).
  // The calling thread's current device is restored afterwards.
  Copy start(const std::vector<at::Tensor>& host) const;

  // Makes the device the calling thread's current one for good: for ferry's own producer
  // threads, whose later event queries and releases then never touch another device.
  void adopt_device() const { guard_.setDevice(device_); }

  // Makes the calling thread's current stream on the device wait for the copies, and
  // records the outputs on it so that the caching allocator does not hand their memory
  // to the copy stream again while the consumer may still read it.
  std::vector<at::Tensor> hand_over(Copy copy) const;

  const c10::Device& device() const { return device_; }
  const c10::Stream& stream() const { return stream_; }  // the copy stream

 private:
  c10::Device device_;
  c10::impl::VirtualGuardImpl guard_;
  c10::Stream stream_;
};

}  // namespace ferry
