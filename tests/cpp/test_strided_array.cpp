// StridedArray: every layout's rows copied as the naive reference copies them.
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "harness.h"
#include "strided_views.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

const std::vector<int64_t> kItemsizes = {1, 2, 3, 4, 8, 12, 16};

FERRY_TEST(strided_contiguous_rows) {
  uint32_t seed = 1;
  for (int64_t is : kItemsizes) {
    CHECK_VIEW(make_view({7}, {is}, is, seed++));                      // scalar rows
    CHECK_VIEW(make_view({7, 5}, {5 * is, is}, is, seed++));
    CHECK_VIEW(make_view({4, 3, 5}, {15 * is, 5 * is, is}, is, seed++));
    CHECK_VIEW(make_view({3, 2, 3, 4}, {24 * is, 12 * is, 4 * is, is}, is, seed++));
    CHECK_VIEW(make_view({6, 5}, {8 * is, is}, is, seed++));           // padded rows
    CHECK_VIEW(make_view({4, 3, 5}, {40 * is, 8 * is, is}, is, seed++));  // padded inner
  }
}

FERRY_TEST(strided_transposed_and_every_other) {
  uint32_t seed = 100;
  for (int64_t is : kItemsizes) {
    // (R, C) viewing a contiguous (C, R): rows are columns of the original.
    CHECK_VIEW(make_view({6, 4}, {is, 6 * is}, is, seed++));
    // Row dims transposed: (R, A, B) over (R, B, A).
    CHECK_VIEW(make_view({5, 3, 4}, {12 * is, is, 3 * is}, is, seed++));
    // The rows dimension innermost: (R, A, B) over (A, B, R).
    CHECK_VIEW(make_view({5, 3, 4}, {is, 20 * is, 5 * is}, is, seed++));
    // Every other element, every other row.
    CHECK_VIEW(make_view({5, 4}, {16 * is, 2 * is}, is, seed++));
    CHECK_VIEW(make_view({4, 3, 4}, {24 * is, 8 * is, 2 * is}, is, seed++));
    // Every third row, inner dims contiguous with each other.
    CHECK_VIEW(make_view({4, 2, 3}, {18 * is, 3 * is, is}, is, seed++));
  }
}

FERRY_TEST(strided_negative_strides) {
  uint32_t seed = 200;
  for (int64_t is : kItemsizes) {
    CHECK_VIEW(make_view({6, 4}, {-4 * is, is}, is, seed++));        // rows reversed
    CHECK_VIEW(make_view({6, 4}, {4 * is, -is}, is, seed++));        // each row reversed
    CHECK_VIEW(make_view({6, 4}, {-4 * is, -is}, is, seed++));       // both
    CHECK_VIEW(make_view({6}, {-is}, is, seed++));                   // 1-D reversed
    CHECK_VIEW(make_view({3, 4, 5}, {20 * is, -5 * is, is}, is, seed++));
    CHECK_VIEW(make_view({3, 4, 5}, {20 * is, -5 * is, -is}, is, seed++));  // fully reversed row
    CHECK_VIEW(make_view({3, 4, 5}, {-20 * is, 5 * is, -2 * is}, is, seed++));
    CHECK_VIEW(make_view({4, 3}, {-is, -4 * is}, is, seed++));       // reversed transpose
  }
}

FERRY_TEST(strided_zero_strides) {
  uint32_t seed = 300;
  for (int64_t is : kItemsizes) {
    CHECK_VIEW(make_view({5, 4}, {0, is}, is, seed++));              // every row the same
    CHECK_VIEW(make_view({5, 4}, {is, 0}, is, seed++));              // one value per row
    CHECK_VIEW(make_view({5, 3, 4}, {4 * is, 0, is}, is, seed++));   // broadcast middle
    CHECK_VIEW(make_view({5, 3, 4}, {3 * is, is, 0}, is, seed++));   // broadcast inner
    CHECK_VIEW(make_view({5, 3, 4}, {0, 0, is}, is, seed++));
    CHECK_VIEW(make_view({5, 3, 4}, {0, 0, 0}, is, seed++));         // one scalar
    CHECK_VIEW(make_view({5, 3, 4}, {4 * is, 0, -is}, is, seed++));
  }
}

FERRY_TEST(strided_size_one_and_size_zero_dims) {
  uint32_t seed = 400;
  for (int64_t is : kItemsizes) {
    // Size-1 dims may carry any stride (numpy and torch allow it).
    CHECK_VIEW(make_view({4, 1, 5, 1}, {5 * is, 12345, is, -999}, is, seed++));
    CHECK_VIEW(make_view({4, 1}, {is, 7}, is, seed++));
    CHECK_VIEW(make_view({4, 1, 1}, {is, 0, -3}, is, seed++));
    CHECK_VIEW(make_view({4, 3, 1, 2}, {6 * is, 2 * is, 1000 * is, is}, is, seed++));
    CHECK_VIEW(make_view({4, 3, 1, 2}, {is, 8 * is, -5, 4 * is}, is, seed++));
    CHECK_VIEW(make_view({1, 3}, {777, is}, is, seed++));            // a single row
    // Size-0 dims: rows of zero bytes (copy_row must write nothing), or no rows at all.
    CHECK_VIEW(make_view({4, 0, 5}, {0, 5 * is, is}, is, seed++));
    CHECK_VIEW(make_view({4, 5, 0}, {0, 0, is}, is, seed++));
    CHECK_VIEW(make_view({0, 5}, {5 * is, is}, is, seed++));
    CHECK_VIEW(make_view({0}, {is}, is, seed++));
  }
}

FERRY_TEST(strided_overlapping_windows) {
  uint32_t seed = 500;
  for (int64_t is : kItemsizes) {
    // Sliding windows (as_strided): row r is elements r..r+3, overlapping the next row.
    CHECK_VIEW(make_view({6, 4}, {is, is}, is, seed++));
    CHECK_VIEW(make_view({5, 3, 3}, {is, 2 * is, is}, is, seed++));  // 3x3 windows over rows
    CHECK_VIEW(make_view({5, 2, 3}, {is, 3 * is, 3 * is}, is, seed++));
  }
}

FERRY_TEST(strided_random_views) {
  // Random shapes, permutations, steps (negative too) and broadcasts of a contiguous
  // parent, plus fully random strides: exercises the merging of dimensions.
  std::mt19937 rng(12345);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 3000; ++trial) {
    const int64_t is = kItemsizes[static_cast<size_t>(pick(0, 6))];
    const size_t nd = static_cast<size_t>(pick(1, 5));
    std::vector<int64_t> shape(nd);
    for (auto& s : shape) s = pick(0, 9) == 0 ? 1 : pick(1, 4);
    if (pick(0, 40) == 0) shape[static_cast<size_t>(pick(0, static_cast<int64_t>(nd) - 1))] = 0;
    std::vector<int64_t> strides(nd);
    if (trial % 3 == 2) {
      for (auto& s : strides) s = pick(-6, 6) * is + (pick(0, 9) == 0 ? pick(-2, 2) : 0);
    } else {
      // A contiguous parent (with an optional step) in a random dimension order.
      std::vector<size_t> order(nd);
      for (size_t d = 0; d < nd; ++d) order[d] = d;
      std::shuffle(order.begin(), order.end(), rng);
      int64_t stride = is;
      std::vector<int64_t> parent(nd);
      for (size_t k = nd; k-- > 0;) {
        const size_t d = order[k];
        const int64_t step = pick(0, 3) == 0 ? pick(2, 3) : 1;
        parent[d] = stride * step;
        stride *= shape[d] * step + pick(0, 4) / 4;  // sometimes padded
      }
      for (size_t d = 0; d < nd; ++d) {
        strides[d] = parent[d];
        if (pick(0, 4) == 0) strides[d] = -strides[d];
        if (pick(0, 9) == 0) strides[d] = 0;
      }
    }
    if (!CHECK_VIEW(make_view(shape, strides, is, static_cast<uint32_t>(trial)))) return;
  }
}

FERRY_TEST(strided_rejects_bad_arguments) {
  const uint8_t data[16] = {};
  EXPECT_THROWS(StridedArray(data, {}, {}, 1), "at least one dimension");
  EXPECT_THROWS(StridedArray(data, {2, 2}, {2}, 1), "dimensions");
  EXPECT_THROWS(StridedArray(data, {2}, {1}, 0), "itemsize");
  EXPECT_THROWS(StridedArray(data, {2, -1}, {1, 1}, 1), "negative dimension");
}
