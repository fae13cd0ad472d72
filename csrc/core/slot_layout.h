// The layout rules of ferry's slots, one definition for C++ and (through the bindings)
// Python: how far each allocation in a slot is aligned, how many bytes a strided tensor
// spans, and which tensors' byte ranges overlap (views of one another), so that they
// travel as one copy of the bytes they span together and stay views of one another.
// Pure functions: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry {

// Every allocation in a slot starts on this boundary (a cache line; any dtype's item).
constexpr int64_t kSlotAlign = 64;

inline int64_t align_up(int64_t n) { return (n + kSlotAlign - 1) / kSlotAlign * kSlotAlign; }

// Bytes from a strided tensor's first element to the end of its last (0 when it has no
// elements); sizes and strides (in elements) must be non-negative.
int64_t strided_extent(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                       int64_t itemsize);

// Byte ranges [start, start + extent) that overlap, chained: each cluster spans
// [lo, hi), lo aligned down to kSlotAlign (a copy of the span keeps each member's
// alignment), and lists its members (indices into the inputs) by start. Ranges with no
// bytes belong to no cluster.
struct OverlapCluster {
  int64_t lo = 0;
  int64_t hi = 0;
  std::vector<std::size_t> members;
};
std::vector<OverlapCluster> overlap_clusters(const std::vector<int64_t>& starts,
                                             const std::vector<int64_t>& extents);

}  // namespace ferry
