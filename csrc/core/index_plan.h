// Maps a dataset index to (leaf, row) through nested Subset / ConcatDataset layers, with
// the index rules of the Python classes they mirror (negative indices included), so that
// an index torch accepts resolves to the same row and one it rejects is reported.
// Immutable after construction; resolve() is safe from any number of threads.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace ferry {

struct RowRef {
  int32_t leaf;
  int64_t row;
};

class IndexPlan {
 public:
  using NodeId = int32_t;

  // Builders: each returns the new node's id. Children must exist already; the last node
  // added is the root.
  // A leaf of `rows` rows, indexed like a tensor: -rows <= i < rows.
  NodeId add_leaf(int32_t leaf, int64_t rows);
  // torch.utils.data.Subset: index i picks child index `indices[i]` (list rules).
  NodeId add_subset(NodeId child, std::vector<int64_t> indices);
  // torch.utils.data.ConcatDataset over `children`, in order.
  NodeId add_concat(std::vector<NodeId> children);

  int64_t length() const;
  // (leaf id, rows) of every leaf node, for checking the plan against the arrays.
  std::vector<std::pair<int32_t, int64_t>> leaves() const;

  // False when torch would reject `index` (the caller then lets torch raise its own error).
  bool resolve(int64_t index, RowRef* out) const;

 private:
  enum class Kind { kLeaf, kSubset, kConcat };
  struct Node {
    Kind kind = Kind::kLeaf;
    int64_t length = 0;
    int32_t leaf = -1;                  // kLeaf
    NodeId child = -1;                  // kSubset
    std::vector<int64_t> indices;       // kSubset
    std::vector<NodeId> children;       // kConcat
    std::vector<int64_t> cumulative;    // kConcat: end offsets of the children
  };

  NodeId add(Node node);

  std::vector<Node> nodes_;
};

}  // namespace ferry
