// A raw, read-only N-d array (a tensor's or numpy array's memory) and the copy of one of
// its rows (a slice along dimension 0) into a contiguous destination.
// Immutable after construction; copy_row() is safe from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry {

class StridedArray {
 public:
  // `shape` and `byte_strides` include dimension 0 (the rows). Strides may be negative or
  // zero (numpy views, expanded tensors). The memory must outlive this object.
  StridedArray(const void* data, std::vector<int64_t> shape, std::vector<int64_t> byte_strides,
               int64_t itemsize);

  int64_t rows() const { return rows_; }
  int64_t itemsize() const { return itemsize_; }
  int64_t row_bytes() const { return row_bytes_; }
  // Row shape (shape without dimension 0), as given.
  const std::vector<int64_t>& row_shape() const { return row_shape_; }

  // Copies row `row` (0 <= row < rows(), unchecked) to `dst` as a C-contiguous block of
  // row_bytes() bytes.
  void copy_row(int64_t row, uint8_t* dst) const;

  // Asks the CPU to start loading row `row` (unchecked) into cache: gathers of random
  // rows otherwise stall on memory latency at the start of every row.
  void prefetch_row(int64_t row) const;

 private:
  void copy_dims(const uint8_t* src, uint8_t*& dst, size_t dim) const;

  const uint8_t* data_;
  int64_t rows_;
  int64_t row_stride_;
  int64_t itemsize_;
  int64_t row_bytes_;
  std::vector<int64_t> row_shape_;
  // The row's dimensions after merging the ones that are contiguous with each other; the
  // innermost `run_bytes_` are copied with one memcpy when they are contiguous.
  std::vector<int64_t> loop_sizes_;
  std::vector<int64_t> loop_strides_;
  int64_t run_bytes_;
  bool contiguous_row_;
};

}  // namespace ferry
