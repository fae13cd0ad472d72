#include "slot_layout.h"

#include <algorithm>
#include <numeric>

#include "check.h"

namespace ferry {

int64_t strided_extent(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                       int64_t itemsize) {
  FERRY_CHECK(sizes.size() == strides.size(), "tensor description: ", sizes.size(),
              " sizes but ", strides.size(), " strides");
  int64_t last = 0;  // index of the last element, in elements
  for (size_t d = 0; d < sizes.size(); ++d) {
    FERRY_CHECK(sizes[d] >= 0 && strides[d] >= 0, "tensor description: negative size or stride");
    if (sizes[d] == 0) return 0;
    last += (sizes[d] - 1) * strides[d];
  }
  return (last + 1) * itemsize;
}

std::vector<OverlapCluster> overlap_clusters(const std::vector<int64_t>& starts,
                                             const std::vector<int64_t>& extents) {
  FERRY_CHECK(starts.size() == extents.size(), "overlap_clusters: ", starts.size(),
              " starts but ", extents.size(), " extents");
  std::vector<size_t> order;
  for (size_t i = 0; i < starts.size(); ++i) {
    if (extents[i] > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return starts[a] < starts[b]; });
  std::vector<OverlapCluster> out;
  for (size_t k = 0; k < order.size();) {  // a sweep: a cluster ends where a gap begins
    OverlapCluster c;
    c.lo = starts[order[k]];
    c.hi = c.lo + extents[order[k]];
    c.members.push_back(order[k]);
    for (++k; k < order.size() && starts[order[k]] < c.hi; ++k) {
      c.hi = std::max(c.hi, starts[order[k]] + extents[order[k]]);
      c.members.push_back(order[k]);
    }
    c.lo -= c.lo % kSlotAlign;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace ferry
