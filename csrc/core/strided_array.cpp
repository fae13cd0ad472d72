#include "strided_array.h"

#include <algorithm>
#include <cstring>

#include "check.h"

namespace ferry {

StridedArray::StridedArray(const void* data, std::vector<int64_t> shape,
                           std::vector<int64_t> byte_strides, int64_t itemsize)
    : data_(static_cast<const uint8_t*>(data)), itemsize_(itemsize) {
  FERRY_CHECK(!shape.empty(), "an array needs at least one dimension (the rows)");
  FERRY_CHECK(shape.size() == byte_strides.size(), "shape has ", shape.size(),
              " dimensions but strides have ", byte_strides.size());
  FERRY_CHECK(itemsize > 0, "itemsize must be positive, got ", itemsize);
  for (int64_t s : shape) FERRY_CHECK(s >= 0, "negative dimension ", s);
  rows_ = shape[0];
  row_stride_ = byte_strides[0];
  row_shape_.assign(shape.begin() + 1, shape.end());

  row_bytes_ = itemsize;
  for (int64_t s : row_shape_) row_bytes_ *= s;

  // Merge dimensions from the inside out: dim i folds into dim i+1 when stepping over
  // dim i+1 entirely lands where dim i's next element starts. Size-1 dimensions vanish.
  std::vector<int64_t> sizes, strides;  // innermost first
  for (size_t d = shape.size(); d-- > 1;) {
    if (shape[d] == 1) continue;
    if (!sizes.empty() && strides.back() * sizes.back() == byte_strides[d]) {
      sizes.back() *= shape[d];
    } else {
      sizes.push_back(shape[d]);
      strides.push_back(byte_strides[d]);
    }
  }
  run_bytes_ = itemsize;
  if (!sizes.empty() && strides.front() == itemsize) {
    run_bytes_ = itemsize * sizes.front();
    sizes.erase(sizes.begin());
    strides.erase(strides.begin());
  }
  loop_sizes_.assign(sizes.rbegin(), sizes.rend());  // outermost first
  loop_strides_.assign(strides.rbegin(), strides.rend());
  contiguous_row_ = loop_sizes_.empty();
}

void StridedArray::copy_dims(const uint8_t* src, uint8_t*& dst, size_t dim) const {
  const int64_t n = loop_sizes_[dim];
  const int64_t stride = loop_strides_[dim];
  if (dim + 1 == loop_sizes_.size()) {
    switch (run_bytes_) {  // fixed sizes let the compiler emit plain loads and stores
      case 1:
        for (int64_t i = 0; i < n; ++i, src += stride) *dst++ = *src;
        return;
      case 2:
        for (int64_t i = 0; i < n; ++i, src += stride, dst += 2) std::memcpy(dst, src, 2);
        return;
      case 4:
        for (int64_t i = 0; i < n; ++i, src += stride, dst += 4) std::memcpy(dst, src, 4);
        return;
      case 8:
        for (int64_t i = 0; i < n; ++i, src += stride, dst += 8) std::memcpy(dst, src, 8);
        return;
      default:
        for (int64_t i = 0; i < n; ++i, src += stride, dst += run_bytes_) {
          std::memcpy(dst, src, run_bytes_);
        }
        return;
    }
  }
  for (int64_t i = 0; i < n; ++i, src += stride) copy_dims(src, dst, dim + 1);
}

void StridedArray::prefetch_row(int64_t row) const {
  constexpr int64_t kLine = 64;
  constexpr int64_t kMaxBytes = 4096;  // beyond that the hardware prefetcher has caught up
  const uint8_t* src = data_ + row * row_stride_;
  const int64_t span = contiguous_row_ ? std::min(run_bytes_, kMaxBytes) : kLine;
  for (int64_t off = 0; off < span; off += kLine) __builtin_prefetch(src + off, 0, 3);
}

void StridedArray::copy_row(int64_t row, uint8_t* dst) const {
  if (row_bytes_ == 0) return;
  const uint8_t* src = data_ + row * row_stride_;
  if (contiguous_row_) {
    std::memcpy(dst, src, run_bytes_);
    return;
  }
  copy_dims(src, dst, 0);
}

}  // namespace ferry
