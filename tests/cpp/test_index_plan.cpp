// IndexPlan: every index resolves to the row torch's Subset and ConcatDataset give.
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "ref_dataset.h"

using namespace harness;  // NOLINT(google-build-using-namespace): the tests' vocabulary

namespace {

std::string show(const std::optional<RowRef>& r) {
  return r ? harness::str("(leaf ", r->leaf, ", row ", r->row, ")") : std::string("rejected");
}

bool same_resolution(const IndexPlan& plan, const RefDataset& ref, int64_t idx,
                     const char* file, int line) {
  RowRef got{-7, -7};
  const bool accepted = plan.resolve(idx, &got);
  const auto want = ref.get(idx);
  const std::optional<RowRef> have = accepted ? std::optional<RowRef>(got) : std::nullopt;
  if (have.has_value() != want.has_value() ||
      (have && (have->leaf != want->leaf || have->row != want->row))) {
    harness::fail(file, line,
                  harness::str("resolve(", idx, ") gave ", show(have), ", torch: ", show(want)));
    return false;
  }
  return true;
}

// Every index in [-len-3, len+3] resolves as the reference says.
void check_plan_at(const IndexPlan& plan, const RefDataset& ref, const char* file, int line) {
  const int64_t n = ref.len();
  if (plan.length() != n) {
    harness::fail(file, line, harness::str("length() ", plan.length(), ", expected ", n));
    return;
  }
  for (int64_t i = -n - 3; i <= n + 3; ++i) {
    if (!same_resolution(plan, ref, i, file, line)) return;  // one report per plan
  }
}
#define CHECK_PLAN(plan, ref) check_plan_at((plan), *(ref), __FILE__, __LINE__)

RowRef resolved(const IndexPlan& plan, int64_t idx) {
  RowRef r{-7, -7};
  REQUIRE(plan.resolve(idx, &r), " for index ", idx);
  return r;
}

}  // namespace

FERRY_TEST(plan_leaf_bounds) {
  IndexPlan plan;
  plan.add_leaf(3, 5);
  EXPECT_EQ(plan.length(), 5);
  for (int64_t i = 0; i < 5; ++i) {
    const RowRef r = resolved(plan, i);
    EXPECT_EQ(r.leaf, 3);
    EXPECT_EQ(r.row, i);
    EXPECT_EQ(resolved(plan, i - 5).row, i);  // -5 .. -1
  }
  RowRef r{};
  EXPECT(!plan.resolve(5, &r), ": index == rows accepted");
  EXPECT(!plan.resolve(-6, &r), ": index == -rows-1 accepted");
  EXPECT(!plan.resolve(1000, &r));
  IndexPlan empty;
  empty.add_leaf(0, 0);
  EXPECT_EQ(empty.length(), 0);
  EXPECT(!empty.resolve(0, &r));
  EXPECT(!empty.resolve(-1, &r));
  CHECK_PLAN(plan, ref_leaf(3, 5));
}

FERRY_TEST(plan_subset_negative_positions_and_stored_indices) {
  // Subset(leaf of 10 rows, [3, -1, 0, -10, 9]).
  const auto ref = ref_subset(ref_leaf(0, 10), {3, -1, 0, -10, 9});
  const IndexPlan plan = plan_of(ref);
  EXPECT_EQ(plan.length(), 5);
  EXPECT_EQ(resolved(plan, 0).row, 3);
  EXPECT_EQ(resolved(plan, 1).row, 9);   // stored -1
  EXPECT_EQ(resolved(plan, 3).row, 0);   // stored -10
  EXPECT_EQ(resolved(plan, -1).row, 9);  // position -1 -> stored 9
  EXPECT_EQ(resolved(plan, -5).row, 3);  // position -5 -> stored 3
  EXPECT_EQ(resolved(plan, -4).row, 9);  // position -4 -> stored -1
  RowRef r{};
  EXPECT(!plan.resolve(5, &r));
  EXPECT(!plan.resolve(-6, &r));
  CHECK_PLAN(plan, ref);
  // Stored indices the child rejects are rejected where they are used.
  const auto bad = ref_subset(ref_leaf(0, 4), {0, 4, -5, -4, 3});
  const IndexPlan bad_plan = plan_of(bad);
  EXPECT(bad_plan.resolve(0, &r));
  EXPECT(!bad_plan.resolve(1, &r), ": stored index 4 of a 4-row leaf accepted");
  EXPECT(!bad_plan.resolve(2, &r), ": stored index -5 of a 4-row leaf accepted");
  EXPECT(!bad_plan.resolve(-4, &r));
  EXPECT_EQ(resolved(bad_plan, 3).row, 0);
  CHECK_PLAN(bad_plan, bad);
  // Subset of a subset; an empty subset.
  CHECK_PLAN(plan_of(ref_subset(ref, {-1, 0, 2, -5})), ref_subset(ref, {-1, 0, 2, -5}));
  CHECK_PLAN(plan_of(ref_subset(ref, {})), ref_subset(ref, {}));
}

FERRY_TEST(plan_concat_boundaries_and_negatives) {
  // ConcatDataset([3 rows, 0 rows, 4 rows, 2 rows]): cumulative sizes 3, 3, 7, 9.
  const auto ref = ref_concat({ref_leaf(0, 3), ref_leaf(1, 0), ref_leaf(2, 4), ref_leaf(3, 2)});
  const IndexPlan plan = plan_of(ref);
  EXPECT_EQ(plan.length(), 9);
  auto at = [&](int64_t i) {
    const RowRef r = resolved(plan, i);
    return std::make_pair(r.leaf, r.row);
  };
  EXPECT(at(0) == std::make_pair(0, int64_t{0}));
  EXPECT(at(2) == std::make_pair(0, int64_t{2}));
  EXPECT(at(3) == std::make_pair(2, int64_t{0}), ": the empty child must be skipped");
  EXPECT(at(6) == std::make_pair(2, int64_t{3}));
  EXPECT(at(7) == std::make_pair(3, int64_t{0}));
  EXPECT(at(8) == std::make_pair(3, int64_t{1}));
  EXPECT(at(-1) == std::make_pair(3, int64_t{1}));
  EXPECT(at(-9) == std::make_pair(0, int64_t{0}), ": -len is valid");
  EXPECT(at(-6) == std::make_pair(2, int64_t{0}));
  RowRef r{};
  EXPECT(!plan.resolve(9, &r), ": index == len accepted");
  EXPECT(!plan.resolve(-10, &r), ": index == -len-1 accepted");
  CHECK_PLAN(plan, ref);
  // Empty children at the ends; a single child; all children empty.
  CHECK_PLAN(plan_of(ref_concat({ref_leaf(0, 0), ref_leaf(1, 2), ref_leaf(2, 0)})),
             ref_concat({ref_leaf(0, 0), ref_leaf(1, 2), ref_leaf(2, 0)}));
  CHECK_PLAN(plan_of(ref_concat({ref_leaf(5, 4)})), ref_concat({ref_leaf(5, 4)}));
  CHECK_PLAN(plan_of(ref_concat({ref_leaf(0, 0), ref_leaf(1, 0)})),
             ref_concat({ref_leaf(0, 0), ref_leaf(1, 0)}));
}

FERRY_TEST(plan_nested_subset_of_concat_of_subset) {
  const auto inner = ref_subset(ref_leaf(0, 6), {5, -6, 2, -1});
  const auto concat = ref_concat({inner, ref_leaf(1, 3), ref_subset(ref_leaf(2, 4), {-4, 3})});
  const auto outer = ref_subset(concat, {-1, 0, 4, -9, 8, 3, -5, 6});
  const IndexPlan plan = plan_of(outer);
  EXPECT_EQ(plan.length(), 8);
  // By hand: concat = [l0:5, l0:0, l0:2, l0:5, l1:0, l1:1, l1:2, l2:0, l2:3].
  auto is = [&](int64_t i, int32_t leaf, int64_t row) {
    const RowRef r = resolved(plan, i);
    return r.leaf == leaf && r.row == row;
  };
  EXPECT(is(0, 2, 3));   // stored -1 -> concat[8]
  EXPECT(is(1, 0, 5));   // stored 0 -> inner[0] = 5
  EXPECT(is(2, 1, 0));   // stored 4
  EXPECT(is(3, 0, 5));   // stored -9 -> concat[0]
  EXPECT(is(4, 2, 3));   // stored 8
  EXPECT(is(5, 0, 5));   // stored 3 -> inner[3] = -1 -> row 5
  EXPECT(is(6, 1, 0));   // stored -5 -> concat[4]
  EXPECT(is(7, 1, 2));   // stored 6
  EXPECT(is(-8, 2, 3));
  CHECK_PLAN(plan, outer);
  // Deeper: concat of subsets of concats.
  const auto deep = ref_concat({outer, ref_subset(ref_concat({concat, inner}), {-13, 12, 0}),
                                ref_concat({ref_leaf(3, 2)})});
  CHECK_PLAN(plan_of(deep), deep);
}

FERRY_TEST(plan_random_trees_match_reference) {
  std::mt19937 rng(777);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  int32_t next_leaf = 0;
  std::function<RefPtr(int)> make = [&](int depth) -> RefPtr {
    const int64_t kind = depth == 0 ? 0 : pick(0, 2);
    if (kind == 0) return ref_leaf(next_leaf++, pick(0, 6));
    if (kind == 1) {
      auto child = make(depth - 1);
      const int64_t n = child->len();
      std::vector<int64_t> idx(static_cast<size_t>(pick(0, 8)));
      // Mostly valid stored indices (either sign), sometimes out of range.
      for (auto& i : idx) {
        i = pick(0, 9) == 0 ? pick(-n - 2, n + 1) : (n == 0 ? 0 : pick(-n, n - 1));
      }
      return ref_subset(child, idx);
    }
    std::vector<RefPtr> children(static_cast<size_t>(pick(1, 4)));
    for (auto& c : children) c = make(depth - 1);
    return ref_concat(children);
  };
  for (int trial = 0; trial < 400; ++trial) {
    next_leaf = 0;
    const auto ref = make(static_cast<int>(pick(0, 4)));
    const int before = harness::failures.load();
    CHECK_PLAN(plan_of(ref), ref);
    if (harness::failures.load() != before) return;
  }
}

FERRY_TEST(plan_extreme_indices) {
  // Python rejects these; the plan must too, without overflowing on the way.
  const auto ref = ref_subset(
      ref_concat({ref_leaf(0, 3), ref_subset(ref_concat({ref_leaf(1, 2)}), {0, -1})}), {0, -1});
  const std::vector<RefPtr> plans = {ref_leaf(0, 3), ref_subset(ref_leaf(0, 3), {1}),
                                     ref_concat({ref_leaf(0, 3), ref_leaf(1, 2)}), ref};
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  for (const auto& r : plans) {
    const IndexPlan plan = plan_of(r);
    for (int64_t i : {kMin, kMin + 1, kMax, kMax - 1, int64_t{-1000000}, int64_t{1000000}}) {
      same_resolution(plan, *r, i, __FILE__, __LINE__);
    }
  }
}

FERRY_TEST(plan_builder_checks) {
  IndexPlan plan;
  RowRef r{};
  EXPECT(!plan.resolve(0, &r), ": an empty plan resolved an index");
  EXPECT_THROWS(plan.length(), "empty");
  EXPECT_THROWS(plan.add_leaf(0, -1), "negative");
  EXPECT_THROWS(plan.add_subset(0, {0}), "unknown child");
  EXPECT_THROWS(plan.add_concat({}), "at least one child");
  const auto leaf = plan.add_leaf(0, 2);
  EXPECT_THROWS(plan.add_subset(leaf + 1, {0}), "unknown child");
  EXPECT_THROWS(plan.add_subset(-1, {0}), "unknown child");
  EXPECT_THROWS(plan.add_concat({leaf, leaf + 5}), "unknown child");
  // The last node added is the root.
  plan.add_subset(leaf, {1});
  EXPECT_EQ(plan.length(), 1);
  EXPECT_EQ(resolved(plan, 0).row, 1);
}
