// The slot layout rules shared by the gather, the staged copy, the shared rings and the
// workers' ring collation (Python calls them through the bindings).
#include <cstdint>
#include <vector>

#include "core/slot_layout.h"
#include "harness.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

FERRY_TEST(slot_align_rounds_up_to_a_cache_line) {
  EXPECT_EQ(ferry::align_up(0), 0);
  EXPECT_EQ(ferry::align_up(1), 64);
  EXPECT_EQ(ferry::align_up(64), 64);
  EXPECT_EQ(ferry::align_up(65), 128);
}

FERRY_TEST(strided_extent_spans_first_to_last_element) {
  EXPECT_EQ(ferry::strided_extent({2, 3}, {3, 1}, 4), 24);  // contiguous 2x3 float
  EXPECT_EQ(ferry::strided_extent({3, 2}, {1, 3}, 4), 24);  // its transpose
  EXPECT_EQ(ferry::strided_extent({2, 2}, {4, 1}, 1), 6);   // rows with a gap between
  EXPECT_EQ(ferry::strided_extent({4}, {0}, 8), 8);          // expanded: one element
  EXPECT_EQ(ferry::strided_extent({}, {}, 2), 2);            // a scalar
  EXPECT_EQ(ferry::strided_extent({3, 0}, {1, 1}, 4), 0);    // no elements
  EXPECT_THROWS(ferry::strided_extent({2}, {1, 1}, 1), "sizes but");
  EXPECT_THROWS(ferry::strided_extent({2}, {-1}, 1), "negative");
}

FERRY_TEST(overlapping_ranges_chain_into_one_cluster) {
  // [100, 150) and [140, 300) overlap; [300, 310) only touches; [0, 0) has no bytes
  const auto got = ferry::overlap_clusters({140, 300, 100, 0}, {160, 10, 50, 0});
  REQUIRE(got.size() == 2, "clusters: ", got.size());
  EXPECT_EQ(got[0].lo, 64);  // 100 aligned down
  EXPECT_EQ(got[0].hi, 300);
  EXPECT(got[0].members == (std::vector<size_t>{2, 0}), "members by start");
  EXPECT_EQ(got[1].lo, 256);
  EXPECT_EQ(got[1].hi, 310);
  EXPECT(got[1].members == (std::vector<size_t>{1}), "a range on its own");
  EXPECT(ferry::overlap_clusters({}, {}).empty(), "no ranges, no clusters");
  EXPECT_THROWS(ferry::overlap_clusters({1}, {}), "starts but");
}
