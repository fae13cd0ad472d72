// The GatherPipeline fixture: 3 leaves x 2 columns of different row sizes and layouts,
// checked byte for byte against the reference copy (strided_views.h, ref_dataset.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/gather_pipeline.h"
#include "core/staging_ring.h"
#include "harness.h"
#include "ref_dataset.h"
#include "strided_views.h"
#include "test_buffers.h"

namespace harness {

using ferry::Batch;
using ferry::BatchLayout;
using ferry::GatherPipeline;
using ferry::StagingRing;

struct GatherFixture {
  std::vector<std::vector<View>> views;  // [leaf][column]
  RefPtr ref;

  IndexPlan plan() const { return plan_of(ref); }
  std::vector<std::vector<StridedArray>> arrays() const {
    std::vector<std::vector<StridedArray>> out;
    for (const auto& leaf : views) {
      auto& cols = out.emplace_back();
      for (const auto& v : leaf) cols.push_back(v.array());
    }
    return out;
  }
  std::vector<int64_t> row_bytes() const {
    std::vector<int64_t> out;
    for (const auto& v : views.front()) out.push_back(v.row_bytes());
    return out;
  }
  int64_t length() const { return ref->len(); }
};

inline GatherFixture make_gather_fixture() {
  GatherFixture fx;
  // Column 0: 3x5 of 4-byte items (60-byte rows). Column 1: 2 of 8-byte items (16).
  fx.views.push_back({make_view({50, 3, 5}, {60, 20, 4}, 4, 11),  // contiguous
                      make_view({50, 2}, {16, 8}, 8, 12)});
  fx.views.push_back({make_view({37, 3, 5}, {60, 4, 12}, 4, 21),  // transposed rows
                      make_view({37, 2}, {-16, -8}, 8, 22)});     // reversed both ways
  fx.views.push_back({make_view({10, 3, 5}, {0, 20, 4}, 4, 31),   // one row, broadcast
                      make_view({10, 2}, {24, 0}, 8, 32)});       // padded rows, broadcast
  std::vector<int64_t> picks;
  for (int64_t i = 0; i < 40; ++i) {
    const int64_t row = (i * 17) % 50;
    picks.push_back(i % 3 == 0 ? row - 50 : row);  // some stored as negative indices
  }
  fx.ref = ref_concat({ref_subset(ref_leaf(0, 50), picks), ref_leaf(1, 37),
                       ref_subset(ref_leaf(2, 10), {-1, 3, 3, 0, -10, 9})});
  return fx;
}

// The bytes column `c` of a batch of `indices` must hold, from the reference.
inline std::vector<uint8_t> expected_column(const GatherFixture& fx,
                                            const std::vector<int64_t>& indices, size_t c) {
  const int64_t rb = fx.views.front()[c].row_bytes();
  std::vector<uint8_t> out(static_cast<size_t>(rb) * indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    const auto r = fx.ref->get(indices[i]);
    REQUIRE(r.has_value(), " index ", indices[i], " should be valid");
    reference_row(fx.views[static_cast<size_t>(r->leaf)][c], r->row, out.data() + i * rb);
  }
  return out;
}

// A delivered batch is complete, laid out as documented, and byte-identical to the source.
inline bool verify_batch_at(const GatherFixture& fx, const Batch& b,
                            const std::vector<int64_t>& indices, const char* file, int line) {
  auto report = [&](const std::string& what) {
    harness::fail(file, line, harness::str("batch ", b.seq, ": ", what));
    return false;
  };
  if (!b.error.empty()) return report("error " + b.error);
  if (b.rejected_position != -1) return report(harness::str("rejected at ", b.rejected_position));
  if (b.rows != static_cast<int64_t>(indices.size())) return report("wrong row count");
  if (!b.buffer) return report("no buffer");
  const auto rbs = fx.row_bytes();
  if (b.layout.offsets.size() != rbs.size()) return report("wrong column count in layout");
  int64_t end = 0;
  for (size_t c = 0; c < rbs.size(); ++c) {
    const int64_t off = b.layout.offsets[c];
    if (off % 64 != 0) return report(harness::str("column ", c, " offset ", off, " unaligned"));
    if (off < end) return report(harness::str("column ", c, " overlaps the one before"));
    end = off + rbs[c] * b.rows;
  }
  if (b.layout.total_bytes < end) return report("total_bytes smaller than the columns");
  if (b.buffer->size() < static_cast<size_t>(b.layout.total_bytes)) {
    return report("buffer smaller than total_bytes");
  }
  for (size_t c = 0; c < rbs.size(); ++c) {
    const auto want = expected_column(fx, indices, c);
    const uint8_t* got = b.buffer->data() + b.layout.offsets[c];
    if (std::memcmp(got, want.data(), want.size()) != 0) {
      size_t first = 0;
      while (got[first] == want[first]) ++first;
      return report(harness::str("column ", c, " row ", first / rbs[c], " (index ",
                                 indices[first / rbs[c]], ") differs from the source"));
    }
  }
  return true;
}
#define VERIFY_BATCH(fx, b, indices) verify_batch_at((fx), (b), (indices), __FILE__, __LINE__)

inline std::vector<int64_t> random_batch(std::mt19937& rng, int64_t length, int64_t max_rows) {
  std::uniform_int_distribution<int64_t> rows(1, max_rows);
  std::uniform_int_distribution<int64_t> index(-length, length - 1);
  std::vector<int64_t> out(static_cast<size_t>(rows(rng)));
  for (auto& i : out) i = index(rng);
  return out;
}

inline int64_t batch_bytes(const GatherFixture& fx, int64_t rows) {
  return BatchLayout::make(fx.row_bytes(), rows).total_bytes;
}

// Submits `num_batches` random batches keeping the pipeline full, checks each delivered
// batch against the source, and returns the order of the delivered sequence numbers.
// With `hold_every` > 0, every such batch's buffer is kept "in use" (as by a user's
// tensor) until the end, and must then still hold exactly what was delivered.
inline std::vector<int64_t> run_many_batches(bool in_order, int num_batches, int hold_every) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  constexpr size_t kMaxInFlight = 8;
  auto ring = std::make_shared<StagingRing>(kMaxInFlight + 2, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 6, kMaxInFlight, ring, in_order);
  std::mt19937 rng(in_order ? 1 : 2);
  std::map<int64_t, std::vector<int64_t>> pending;
  std::vector<int64_t> order;
  struct Held {
    std::shared_ptr<Buffer> buffer;
    std::vector<uint8_t> snapshot;
    int64_t seq;
  };
  std::vector<Held> held;
  int submitted = 0;
  auto submit_one = [&] {
    auto indices = random_batch(rng, fx.length(), 150);
    const int64_t seq = p.submit(indices);
    EXPECT_EQ(seq, static_cast<int64_t>(submitted));
    pending[seq] = std::move(indices);
    ++submitted;
  };
  while (submitted < num_batches && pending.size() < kMaxInFlight) submit_one();
  while (!pending.empty()) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value(), " no batch within ", kPatience, " s");
    const auto it = pending.find(b->seq);
    REQUIRE(it != pending.end(), " unexpected or repeated seq ", b->seq);
    order.push_back(b->seq);
    VERIFY_BATCH(fx, *b, it->second);
    pending.erase(it);
    if (hold_every > 0 && b->seq % hold_every == 0 && b->buffer) {
      as_test_buffer(b->buffer)->hold();
      const uint8_t* d = b->buffer->data();
      held.push_back({b->buffer, std::vector<uint8_t>(d, d + b->layout.total_bytes), b->seq});
    }
    p.release(*b);
    if (submitted < num_batches) submit_one();
  }
  EXPECT_EQ(p.in_flight(), 0);
  for (auto& h : held) {
    EXPECT(std::memcmp(h.buffer->data(), h.snapshot.data(), h.snapshot.size()) == 0,
           ": the buffer of held batch ", h.seq, " was overwritten while in use");
    as_test_buffer(h.buffer)->drop();
  }
  EXPECT(ring->slots() <= ring->capacity());
  return order;
}

// A pipeline over one contiguous leaf of `rows` rows of `row_bytes` bytes.
struct SimpleSource {
  View view;
  explicit SimpleSource(int64_t rows, int64_t row_bytes = 64)
      : view(make_view({rows, row_bytes}, {row_bytes, 1}, 1, 99)) {}
  std::vector<std::vector<StridedArray>> arrays() const { return {{view.array()}}; }
  IndexPlan plan() const { return plan_of(ref_leaf(0, view.shape[0])); }
};

inline std::vector<int64_t> iota_batch(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// True once next() reports the pipeline closed (polling with a short timeout).
inline bool next_reports_closed(GatherPipeline& p) {
  try {
    p.next(0.002);
    return false;
  } catch (const ferry::Error&) {
    return true;
  }
}

}  // namespace harness
