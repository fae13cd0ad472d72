// A staging buffer allocated by torch (plain CPU memory, or page-locked through torch's
// caching host allocator), and the tensors that view one of its columns.
// A TensorBuffer is in use while any tensor other than its own shares its storage, so a
// batch handed to the user keeps its slot until the user's last view of it dies.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "../core/staging_ring.h"

namespace ferry {

class TensorBuffer final : public Buffer {
 public:
  TensorBuffer(size_t nbytes, bool pinned);

  uint8_t* data() override { return tensor_.data_ptr<uint8_t>(); }
  size_t size() const override { return static_cast<size_t>(tensor_.numel()); }
  bool in_use() const override { return tensor_.storage().use_count() > 1; }

  // A tensor of `dtype` and `sizes` (C-contiguous) over the bytes at `byte_offset`,
  // sharing this buffer's storage. `byte_offset` must be a multiple of the item size.
  at::Tensor view(int64_t byte_offset, at::ScalarType dtype, at::IntArrayRef sizes) const;

 private:
  at::Tensor tensor_;  // uint8, one dimension
};

// The factory a StagingRing uses to allocate TensorBuffers.
BufferFactory tensor_buffer_factory(bool pinned);

}  // namespace ferry
