// A reference for IndexPlan, written like the Python classes it mirrors (a tensor leaf,
// torch's Subset and ConcatDataset): where Python raises, get() gives nullopt.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/index_plan.h"

namespace harness {

using ferry::IndexPlan;
using ferry::RowRef;

struct RefDataset;
using RefPtr = std::shared_ptr<const RefDataset>;

struct RefDataset {
  enum class Kind { kLeaf, kSubset, kConcat } kind;
  int32_t leaf = -1;
  int64_t rows = 0;
  RefPtr child;
  std::vector<int64_t> indices;
  std::vector<RefPtr> children;

  int64_t len() const {
    switch (kind) {
      case Kind::kLeaf:
        return rows;
      case Kind::kSubset:
        return static_cast<int64_t>(indices.size());
      case Kind::kConcat: {
        int64_t n = 0;
        for (const auto& c : children) n += c->len();
        return n;
      }
    }
    return 0;
  }

  // nullopt where Python raises.
  std::optional<RowRef> get(int64_t idx) const {
    switch (kind) {
      case Kind::kLeaf:  // tensor[idx]
        if (idx < -rows || idx >= rows) return std::nullopt;
        return RowRef{leaf, idx < 0 ? idx + rows : idx};
      case Kind::kSubset: {  // self.dataset[self.indices[idx]], list indexing
        const int64_t n = len();
        if (idx < -n || idx >= n) return std::nullopt;
        return child->get(indices[static_cast<size_t>(idx < 0 ? idx + n : idx)]);
      }
      case Kind::kConcat: {  // ConcatDataset.__getitem__
        const int64_t n = len();
        if (idx < 0) {
          if (idx < -n) return std::nullopt;  // ValueError
          idx += n;
        }
        std::vector<int64_t> cumulative;
        int64_t s = 0;
        for (const auto& c : children) cumulative.push_back(s += c->len());
        size_t d = 0;  // bisect.bisect_right(cumulative, idx)
        while (d < cumulative.size() && cumulative[d] <= idx) ++d;
        if (d == children.size()) return std::nullopt;  // IndexError
        return children[d]->get(d == 0 ? idx : idx - cumulative[d - 1]);
      }
    }
    return std::nullopt;
  }

  IndexPlan::NodeId build(IndexPlan& plan) const {
    switch (kind) {
      case Kind::kLeaf:
        return plan.add_leaf(leaf, rows);
      case Kind::kSubset:
        return plan.add_subset(child->build(plan), indices);
      case Kind::kConcat: {
        std::vector<IndexPlan::NodeId> ids;
        for (const auto& c : children) ids.push_back(c->build(plan));
        return plan.add_concat(ids);
      }
    }
    return -1;
  }
};

inline RefPtr ref_leaf(int32_t leaf, int64_t rows) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kLeaf;
  r->leaf = leaf;
  r->rows = rows;
  return r;
}
inline RefPtr ref_subset(RefPtr child, std::vector<int64_t> indices) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kSubset;
  r->child = std::move(child);
  r->indices = std::move(indices);
  return r;
}
inline RefPtr ref_concat(std::vector<RefPtr> children) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kConcat;
  r->children = std::move(children);
  return r;
}
inline IndexPlan plan_of(const RefPtr& ref) {
  IndexPlan plan;
  ref->build(plan);
  return plan;
}

}  // namespace harness
