// Strided views over exactly the bytes they address, and a naive reference copy of their
// rows: the source of truth for StridedArray and for the bytes the gather delivers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/strided_array.h"
#include "harness.h"

namespace harness {

using ferry::StridedArray;

struct View {
  // Exactly the bytes the view can address, so ASan flags any read outside them.
  std::vector<uint8_t> storage;
  int64_t base_offset = 0;  // of element 0 in `storage` (an offset: Views get copied)
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // bytes
  int64_t itemsize = 1;

  const uint8_t* base() const { return storage.data() + base_offset; }
  StridedArray array() const { return StridedArray(base(), shape, strides, itemsize); }
  int64_t row_bytes() const {
    int64_t n = itemsize;
    for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
    return n;
  }
  std::string describe() const {
    std::ostringstream os;
    os << "shape (";
    for (int64_t s : shape) os << s << ",";
    os << ") strides (";
    for (int64_t s : strides) os << s << ",";
    os << ") itemsize " << itemsize;
    return os.str();
  }
};

inline View make_view(std::vector<int64_t> shape, std::vector<int64_t> strides,
                      int64_t itemsize, uint32_t seed) {
  View v;
  v.shape = std::move(shape);
  v.strides = std::move(strides);
  v.itemsize = itemsize;
  bool empty = false;
  for (int64_t s : v.shape) empty = empty || s == 0;
  int64_t lo = 0, hi = 0;
  if (!empty) {
    for (size_t d = 0; d < v.shape.size(); ++d) {
      const int64_t span = v.strides[d] * (v.shape[d] - 1);
      (span < 0 ? lo : hi) += span;
    }
  }
  v.storage.resize(empty ? 1 : static_cast<size_t>(hi - lo + itemsize));
  std::mt19937 rng(seed);
  for (auto& b : v.storage) b = static_cast<uint8_t>(rng());
  v.base_offset = -lo;
  return v;
}

// Row `row` of `v`, element by element in C order, itemsize bytes at a time.
inline void reference_row(const View& v, int64_t row, uint8_t* dst) {
  const size_t nd = v.shape.size() - 1;
  int64_t count = 1;
  for (size_t d = 1; d <= nd; ++d) count *= v.shape[d];
  std::vector<int64_t> idx(nd, 0);
  for (int64_t k = 0; k < count; ++k) {
    int64_t off = row * v.strides[0];
    for (size_t d = 0; d < nd; ++d) off += idx[d] * v.strides[d + 1];
    for (int64_t b = 0; b < v.itemsize; ++b) *dst++ = v.base()[off + b];
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < v.shape[d + 1]) break;
      idx[d] = 0;
    }
  }
}

// Checks rows(), row_bytes(), row_shape() and every row's copy against the reference,
// with guard bytes on both sides of the destination. Returns false on the first mismatch.
inline bool check_view_at(const View& v, const char* file, int line) {
  constexpr size_t kGuard = 32;
  constexpr uint8_t kGuardByte = 0xCD;
  const StridedArray a = v.array();
  bool ok = true;
  auto report = [&](const std::string& what) {
    harness::fail(file, line, what + " for " + v.describe());
    ok = false;
  };
  if (a.rows() != v.shape[0]) report(harness::str("rows() ", a.rows()));
  if (a.itemsize() != v.itemsize) report(harness::str("itemsize() ", a.itemsize()));
  if (a.row_bytes() != v.row_bytes()) report(harness::str("row_bytes() ", a.row_bytes()));
  if (a.row_shape() != std::vector<int64_t>(v.shape.begin() + 1, v.shape.end())) {
    report("row_shape() differs");
  }
  if (!ok) return false;
  const size_t rb = static_cast<size_t>(v.row_bytes());
  std::vector<uint8_t> got(rb + 2 * kGuard), want(rb);
  for (int64_t r = 0; r < v.shape[0]; ++r) {
    std::fill(got.begin(), got.end(), kGuardByte);
    a.copy_row(r, got.data() + kGuard);
    reference_row(v, r, want.data());
    for (size_t g = 0; g < kGuard; ++g) {
      if (got[g] != kGuardByte || got[kGuard + rb + g] != kGuardByte) {
        report(harness::str("copy_row(", r, ") wrote outside its row_bytes()"));
        return false;
      }
    }
    if (rb > 0 && std::memcmp(got.data() + kGuard, want.data(), rb) != 0) {
      size_t first = 0;
      while (got[kGuard + first] == want[first]) ++first;
      report(harness::str("copy_row(", r, ") differs from the reference at byte ", first));
      return false;
    }
  }
  return true;
}
#define CHECK_VIEW(v) check_view_at((v), __FILE__, __LINE__)

}  // namespace harness
