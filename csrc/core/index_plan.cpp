#include "index_plan.h"

#include <algorithm>

#include "check.h"

namespace ferry {

IndexPlan::NodeId IndexPlan::add(Node node) {
  nodes_.push_back(std::move(node));
  return static_cast<NodeId>(nodes_.size() - 1);
}

IndexPlan::NodeId IndexPlan::add_leaf(int32_t leaf, int64_t rows) {
  FERRY_CHECK(rows >= 0, "negative row count ", rows);
  FERRY_CHECK(leaf >= 0, "negative leaf id ", leaf);
  Node n;
  n.kind = Kind::kLeaf;
  n.length = rows;
  n.leaf = leaf;
  return add(std::move(n));
}

IndexPlan::NodeId IndexPlan::add_subset(NodeId child, std::vector<int64_t> indices) {
  FERRY_CHECK(child >= 0 && child < static_cast<NodeId>(nodes_.size()), "unknown child node ",
              child);
  Node n;
  n.kind = Kind::kSubset;
  n.length = static_cast<int64_t>(indices.size());
  n.child = child;
  n.indices = std::move(indices);
  return add(std::move(n));
}

IndexPlan::NodeId IndexPlan::add_concat(std::vector<NodeId> children) {
  FERRY_CHECK(!children.empty(), "a concatenation needs at least one child");
  Node n;
  n.kind = Kind::kConcat;
  for (NodeId c : children) {
    FERRY_CHECK(c >= 0 && c < static_cast<NodeId>(nodes_.size()), "unknown child node ", c);
    n.length += nodes_[c].length;
    n.cumulative.push_back(n.length);
  }
  n.children = std::move(children);
  return add(std::move(n));
}

std::vector<std::pair<int32_t, int64_t>> IndexPlan::leaves() const {
  std::vector<std::pair<int32_t, int64_t>> out;
  for (const Node& n : nodes_) {
    if (n.kind == Kind::kLeaf) out.emplace_back(n.leaf, n.length);
  }
  return out;
}

int64_t IndexPlan::length() const {
  FERRY_CHECK(!nodes_.empty(), "empty index plan");
  return nodes_.back().length;
}

bool IndexPlan::resolve(int64_t index, RowRef* out) const {
  if (nodes_.empty()) return false;
  const Node* node = &nodes_.back();
  for (;;) {
    const int64_t len = node->length;
    switch (node->kind) {
      case Kind::kLeaf:  // tensor[i]
        if (index < -len || index >= len) return false;
        out->leaf = node->leaf;
        out->row = index < 0 ? index + len : index;
        return true;
      case Kind::kSubset:  // self.dataset[self.indices[i]]
        if (index < -len || index >= len) return false;
        index = node->indices[index < 0 ? index + len : index];
        node = &nodes_[node->child];
        break;
      case Kind::kConcat: {  // bisect_right over cumulative sizes
        if (index < 0) {
          if (index < -len) return false;  // written so that INT64_MIN cannot overflow
          index += len;
        }
        if (index >= len) return false;
        const auto it = std::upper_bound(node->cumulative.begin(), node->cumulative.end(), index);
        const size_t which = static_cast<size_t>(it - node->cumulative.begin());
        if (which > 0) index -= node->cumulative[which - 1];
        node = &nodes_[node->children[which]];
        break;
      }
    }
  }
}

}  // namespace ferry
