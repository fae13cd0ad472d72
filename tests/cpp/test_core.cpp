// Unit tests of ferry's torch-free core (csrc/core), with a small self-contained harness:
// `ferry_core_tests <name>` runs one case, no argument runs them all. CMake registers one
// ctest per line that starts with `FERRY_TEST(name)`.
//
// Timing: no test asserts that something was fast, only that it finished within a
// generous bound (kPrompt), so a loaded machine cannot make a test fail; a hang is caught
// by the per-case watchdog.
#include <sys/mman.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/bounded_queue.h"
#include "core/check.h"
#include "core/gather_pipeline.h"
#include "core/index_plan.h"
#include "core/memory_budget.h"
#include "core/shared_ring.h"
#include "core/staging_ring.h"
#include "core/strided_array.h"
#include "core/thread_pool.h"

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------
namespace harness {

using TestFn = void (*)();
struct Case {
  const char* name;
  TestFn fn;
};

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

struct Registrar {
  Registrar(const char* name, TestFn fn) { registry().push_back({name, fn}); }
};

std::atomic<int> failures{0};  // atomic: helper threads of a case may report too
std::mutex report_mutex;

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

void fail(const char* file, int line, const std::string& what) {
  failures.fetch_add(1);
  std::lock_guard<std::mutex> lock(report_mutex);
  std::fprintf(stderr, "  %s:%d: FAILED: %s\n", file, line, what.c_str());
  std::fflush(stderr);
}

struct Abort {};  // thrown by REQUIRE: ends the current case

constexpr double kWatchdogSeconds = 30;

bool run_case(const Case& c) {
  const int before = failures.load();
  std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, std::chrono::duration<double>(kWatchdogSeconds),
                     [&] { return finished; })) {
      std::fprintf(stdout, "%s: FAILED (still running after %.0f s: a hang)\n", c.name,
                   kWatchdogSeconds);
      std::fflush(stdout);
      std::_Exit(3);
    }
  });
  try {
    c.fn();
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    fail(__FILE__, __LINE__, str("unexpected exception: ", e.what()));
  } catch (...) {
    fail(__FILE__, __LINE__, "unexpected non-std exception");
  }
  {
    std::lock_guard<std::mutex> lock(m);
    finished = true;
  }
  cv.notify_all();
  watchdog.join();
  const bool ok = failures.load() == before;
  std::fprintf(stdout, "%s: %s\n", c.name, ok ? "ok" : "FAILED");
  std::fflush(stdout);
  return ok;
}

}  // namespace harness

#define FERRY_TEST(name)                                                               \
  static void ferry_test_##name();                                                     \
  static const ::harness::Registrar ferry_registrar_##name(#name, &ferry_test_##name); \
  static void ferry_test_##name()

// EXPECT(cond, optional message parts...): records a failure and goes on.
#define EXPECT(cond, ...)                                                          \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      ::harness::fail(__FILE__, __LINE__, ::harness::str(#cond, ##__VA_ARGS__)); \
    }                                                                              \
  } while (0)

// REQUIRE(cond, ...): records a failure and ends the case.
#define REQUIRE(cond, ...)                                                         \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      ::harness::fail(__FILE__, __LINE__, ::harness::str(#cond, ##__VA_ARGS__)); \
      throw ::harness::Abort{};                                                    \
    }                                                                              \
  } while (0)

#define EXPECT_EQ(a, b)                                                                \
  do {                                                                                 \
    const auto& ferry_a_ = (a);                                                        \
    const auto& ferry_b_ = (b);                                                        \
    if (!(ferry_a_ == ferry_b_)) {                                                     \
      ::harness::fail(__FILE__, __LINE__,                                              \
                      ::harness::str(#a " == " #b " (", ferry_a_, " vs ", ferry_b_, ")")); \
    }                                                                                  \
  } while (0)

// The statement must throw ferry::Error whose message contains `substr`.
#define EXPECT_THROWS(stmt, substr)                                                      \
  do {                                                                                   \
    bool ferry_thrown_ = false;                                                          \
    try {                                                                                \
      stmt;                                                                              \
    } catch (const ::ferry::Error& ferry_e_) {                                           \
      ferry_thrown_ = true;                                                              \
      if (std::string(ferry_e_.what()).find(substr) == std::string::npos) {              \
        ::harness::fail(__FILE__, __LINE__,                                              \
                        ::harness::str(#stmt " threw without \"", substr, "\" in: ",     \
                                       ferry_e_.what()));                                \
      }                                                                                  \
    }                                                                                    \
    if (!ferry_thrown_) {                                                                \
      ::harness::fail(__FILE__, __LINE__, #stmt " did not throw ferry::Error");          \
    }                                                                                    \
  } while (0)

int main(int argc, char** argv) {
  auto& cases = harness::registry();
  if (argc > 2) {
    std::fprintf(stderr, "usage: %s [test name | --list]\n", argv[0]);
    return 2;
  }
  if (argc == 2 && std::string(argv[1]) == "--list") {
    for (const auto& c : cases) std::printf("%s\n", c.name);
    return 0;
  }
  int failed = 0, ran = 0;
  for (const auto& c : cases) {
    if (argc == 2 && argv[1] != std::string(c.name)) continue;
    ++ran;
    if (!harness::run_case(c)) ++failed;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  if (argc == 1) std::printf("%d of %d cases passed\n", ran - failed, ran);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the cases
// ---------------------------------------------------------------------------------------
namespace {

using ferry::Batch;
using ferry::BatchLayout;
using ferry::BoundedQueue;
using ferry::Buffer;
using ferry::BufferFactory;
using ferry::GatherPipeline;
using ferry::IndexPlan;
using ferry::RowRef;
using ferry::StagingRing;
using ferry::StridedArray;
using ferry::ThreadPool;
using Clock = std::chrono::steady_clock;

// What "promptly" means: far above any real latency, far below the watchdog.
constexpr double kPrompt = 2.0;
// How long a test waits for something that must happen (a batch, a thread).
constexpr double kPatience = 10.0;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Polls `pred` until it holds or `timeout_s` passed; returns its last value.
template <typename Pred>
bool eventually(Pred pred, double timeout_s = kPrompt) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (!pred()) {
    if (Clock::now() > deadline) return pred();
    sleep_ms(1);
  }
  return true;
}

// A one-shot gate. wait() gives up after `max_s` so that a failing case cannot hang.
class Gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  bool wait(double max_s = kPatience) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, std::chrono::duration<double>(max_s), [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Runs `f` on its own thread and tells whether it has returned. Joins on destruction.
class Async {
 public:
  explicit Async(std::function<void()> f)
      : thread_([this, f = std::move(f)] {
          try {
            f();
          } catch (const std::exception& e) {
            harness::fail(__FILE__, __LINE__, harness::str("exception on a helper thread: ",
                                                           e.what()));
          }
          done_.store(true);
        }) {}
  ~Async() { join(); }
  bool done() const { return done_.load(); }
  bool wait_done(double timeout_s = kPrompt) {
    return eventually([&] { return done(); }, timeout_s);
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts after done_ exists
};

// A Buffer whose in_use() the test controls: hold()/drop() stand for a user's views,
// start_copy()/finish_copy() for an asynchronous copy out of it.
class TestBuffer : public Buffer {
 public:
  TestBuffer(size_t nbytes, uint8_t fill) : bytes_(nbytes, fill) {}
  uint8_t* data() override { return bytes_.data(); }
  size_t size() const override { return bytes_.size(); }
  bool in_use() const override {
    return users_.load(std::memory_order_acquire) > 0 ||
           copying_.load(std::memory_order_acquire);
  }
  void hold() { users_.fetch_add(1, std::memory_order_relaxed); }
  void drop() { users_.fetch_sub(1, std::memory_order_release); }
  void start_copy() { copying_.store(true, std::memory_order_relaxed); }
  void finish_copy() {
    {
      std::lock_guard<std::mutex> lock(copy_mutex_);
      copying_.store(false, std::memory_order_release);
    }
    copy_done_.notify_all();
  }
  bool wait_for_copies() override {
    std::unique_lock<std::mutex> lock(copy_mutex_);
    copy_done_.wait(lock, [&] { return !copying_.load(std::memory_order_acquire); });
    return true;
  }
  // Set while exactly one party may touch the bytes; catches double hand-outs.
  std::atomic<int> owner{0};

 private:
  std::vector<uint8_t> bytes_;
  std::atomic<int> users_{0};
  std::atomic<bool> copying_{false};
  std::mutex copy_mutex_;
  std::condition_variable copy_done_;
};

TestBuffer* as_test_buffer(const std::shared_ptr<Buffer>& b) {
  return static_cast<TestBuffer*>(b.get());
}

// A buffer factory that counts calls, keeps what it made, and can hold calls at a gate
// (block_if), throw (throw_if) or return too little memory (short_if).
struct TestFactory {
  uint8_t fill = 0xEE;
  std::function<bool(size_t)> block_if;
  std::function<bool(size_t)> throw_if;
  std::function<bool(size_t)> short_if;
  Gate gate;
  std::atomic<int> calls{0};
  std::atomic<int> blocked_now{0};  // calls waiting at the gate right now
  std::mutex mutex;
  std::vector<std::shared_ptr<TestBuffer>> made;

  std::shared_ptr<TestBuffer> made_at(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    return i < made.size() ? made[i] : nullptr;
  }
};

BufferFactory factory_of(const std::shared_ptr<TestFactory>& f) {
  return [f](size_t nbytes) -> std::shared_ptr<Buffer> {
    f->calls.fetch_add(1);
    if (f->block_if && f->block_if(nbytes)) {
      f->blocked_now.fetch_add(1);
      f->gate.wait();
      f->blocked_now.fetch_sub(1);
    }
    if (f->throw_if && f->throw_if(nbytes)) throw std::runtime_error("test factory: no memory");
    const size_t n = f->short_if && f->short_if(nbytes) ? nbytes / 2 : nbytes;
    auto b = std::make_shared<TestBuffer>(n, f->fill);
    std::lock_guard<std::mutex> lock(f->mutex);
    f->made.push_back(b);
    return b;
  };
}

// ---------------------------------------------------------------------------------------
// StridedArray: views over exactly the bytes they address, and a naive reference copy
// ---------------------------------------------------------------------------------------
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

View make_view(std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t itemsize,
               uint32_t seed) {
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
void reference_row(const View& v, int64_t row, uint8_t* dst) {
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
bool check_view_at(const View& v, const char* file, int line) {
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

const std::vector<int64_t> kItemsizes = {1, 2, 3, 4, 8, 12, 16};

// ---------------------------------------------------------------------------------------
// IndexPlan: a reference written like the Python classes it mirrors
// ---------------------------------------------------------------------------------------
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

RefPtr ref_leaf(int32_t leaf, int64_t rows) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kLeaf;
  r->leaf = leaf;
  r->rows = rows;
  return r;
}
RefPtr ref_subset(RefPtr child, std::vector<int64_t> indices) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kSubset;
  r->child = std::move(child);
  r->indices = std::move(indices);
  return r;
}
RefPtr ref_concat(std::vector<RefPtr> children) {
  auto r = std::make_shared<RefDataset>();
  r->kind = RefDataset::Kind::kConcat;
  r->children = std::move(children);
  return r;
}
IndexPlan plan_of(const RefPtr& ref) {
  IndexPlan plan;
  ref->build(plan);
  return plan;
}

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

// ---------------------------------------------------------------------------------------
// GatherPipeline fixture: 3 leaves x 2 columns of different row sizes and layouts
// ---------------------------------------------------------------------------------------
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

GatherFixture make_gather_fixture() {
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
std::vector<uint8_t> expected_column(const GatherFixture& fx, const std::vector<int64_t>& indices,
                                     size_t c) {
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
bool verify_batch_at(const GatherFixture& fx, const Batch& b, const std::vector<int64_t>& indices,
                     const char* file, int line) {
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

std::vector<int64_t> random_batch(std::mt19937& rng, int64_t length, int64_t max_rows) {
  std::uniform_int_distribution<int64_t> rows(1, max_rows);
  std::uniform_int_distribution<int64_t> index(-length, length - 1);
  std::vector<int64_t> out(static_cast<size_t>(rows(rng)));
  for (auto& i : out) i = index(rng);
  return out;
}

int64_t batch_bytes(const GatherFixture& fx, int64_t rows) {
  return BatchLayout::make(fx.row_bytes(), rows).total_bytes;
}

// Submits `num_batches` random batches keeping the pipeline full, checks each delivered
// batch against the source, and returns the order of the delivered sequence numbers.
// With `hold_every` > 0, every such batch's buffer is kept "in use" (as by a user's
// tensor) until the end, and must then still hold exactly what was delivered.
std::vector<int64_t> run_many_batches(bool in_order, int num_batches, int hold_every) {
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

std::vector<int64_t> iota_batch(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// True once next() reports the pipeline closed (polling with a short timeout).
bool next_reports_closed(GatherPipeline& p) {
  try {
    p.next(0.002);
    return false;
  } catch (const ferry::Error&) {
    return true;
  }
}

}  // namespace

// =======================================================================================
// BoundedQueue
// =======================================================================================

FERRY_TEST(queue_fifo_order) {
  BoundedQueue<int> q(100);
  for (int i = 0; i < 100; ++i) REQUIRE(q.push(i));
  EXPECT_EQ(q.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    auto v = q.pop();
    REQUIRE(v.has_value());
    EXPECT_EQ(*v, i);
  }
  EXPECT_EQ(q.size(), 0u);
  // Move-only items pass through.
  BoundedQueue<std::unique_ptr<int>> mq(2);
  REQUIRE(mq.push(std::make_unique<int>(7)));
  auto p = mq.pop();
  REQUIRE(p.has_value() && *p);
  EXPECT_EQ(**p, 7);
}

FERRY_TEST(queue_rejects_zero_capacity) {
  EXPECT_THROWS(BoundedQueue<int>(0), "capacity");
}

FERRY_TEST(queue_push_blocks_while_full) {
  BoundedQueue<int> q(2);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  std::atomic<bool> pushed{false};
  Async producer([&] {
    EXPECT(q.push(3));
    pushed.store(true);
  });
  sleep_ms(50);
  EXPECT(!pushed.load(), ": push() on a full queue returned before any pop()");
  EXPECT_EQ(q.size(), 2u);
  auto v = q.pop();
  REQUIRE(v.has_value());
  EXPECT_EQ(*v, 1);
  EXPECT(producer.wait_done(), ": push() still blocked after a pop()");
  EXPECT(pushed.load());
  EXPECT_EQ(q.pop().value_or(-1), 2);
  EXPECT_EQ(q.pop().value_or(-1), 3);
}

FERRY_TEST(queue_close_wakes_blocked_pop) {
  BoundedQueue<int> q(4);
  std::atomic<bool> got_nullopt{false};
  Async consumer([&] { got_nullopt.store(!q.pop().has_value()); });
  sleep_ms(30);  // let it block (if it has not yet, pop() after close() is checked too)
  EXPECT(!consumer.done(), ": pop() on an empty queue returned");
  q.close();
  EXPECT(consumer.wait_done(), ": close() did not wake a blocked pop()");
  consumer.join();
  EXPECT(got_nullopt.load(), ": pop() after close() returned an item");
  EXPECT(q.closed());
  EXPECT(!q.pop().has_value());
}

FERRY_TEST(queue_close_wakes_blocked_push) {
  BoundedQueue<int> q(1);
  REQUIRE(q.push(1));
  std::atomic<int> result{-1};
  Async producer([&] { result.store(q.push(2) ? 1 : 0); });
  sleep_ms(30);
  EXPECT(!producer.done(), ": push() on a full queue returned");
  q.close();
  EXPECT(producer.wait_done(), ": close() did not wake a blocked push()");
  producer.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT(!q.push(3), ": push() after close() succeeded");
}

FERRY_TEST(queue_try_push_when_full_or_closed) {
  BoundedQueue<int> q(2);
  EXPECT(q.try_push(1));
  EXPECT(q.try_push(2));
  EXPECT(!q.try_push(3), ": try_push() on a full queue succeeded");
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.pop().value_or(-1), 1);
  EXPECT(q.try_push(3));
  EXPECT_EQ(q.pop().value_or(-1), 2);
  EXPECT_EQ(q.pop().value_or(-1), 3);
  q.close();
  EXPECT(!q.try_push(4), ": try_push() after close() succeeded");
}

FERRY_TEST(queue_pop_for_times_out) {
  BoundedQueue<int> q(2);
  const auto t0 = Clock::now();
  auto v = q.pop_for(std::chrono::milliseconds(30));
  const double waited = seconds_since(t0);
  EXPECT(!v.has_value());
  EXPECT(waited >= 0.025, ": pop_for(30 ms) returned after ", waited, " s");
  EXPECT(waited < kPrompt, ": pop_for(30 ms) took ", waited, " s");
  EXPECT(!q.closed(), ": a timeout closed the queue");
  REQUIRE(q.push(5));
  EXPECT_EQ(q.pop_for(std::chrono::milliseconds(30)).value_or(-1), 5);
  // An item pushed while waiting is returned before the timeout.
  Async producer([&] {
    sleep_ms(20);
    q.push(6);
  });
  EXPECT_EQ(q.pop_for(std::chrono::seconds(5)).value_or(-1), 6);
}

FERRY_TEST(queue_close_drops_items) {
  BoundedQueue<int> q(4);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  q.close();
  EXPECT(!q.pop().has_value(), ": close() should drop queued items");
  EXPECT(!q.pop_for(std::chrono::milliseconds(1)).has_value());
  EXPECT_EQ(q.size(), 0u);
  q.close();  // idempotent
  EXPECT(q.closed());
}

FERRY_TEST(queue_many_producers_and_consumers) {
  constexpr int kProducers = 4, kPerProducer = 3000, kConsumers = 3;
  BoundedQueue<std::pair<int, int>> q(8);
  std::mutex m;
  std::vector<std::vector<std::pair<int, int>>> seen(kConsumers);
  std::atomic<int> taken{0};
  std::vector<std::unique_ptr<Async>> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.push_back(std::make_unique<Async>([&, p] {
      for (int i = 0; i < kPerProducer; ++i) EXPECT(q.push({p, i}));
    }));
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.push_back(std::make_unique<Async>([&, c] {
      const auto deadline = Clock::now() + std::chrono::duration<double>(kPatience);
      while (taken.load() < kProducers * kPerProducer && Clock::now() < deadline) {
        if (auto v = q.pop_for(std::chrono::milliseconds(5))) {
          seen[c].push_back(*v);
          taken.fetch_add(1);
        }
      }
    }));
  }
  threads.clear();  // joins
  std::vector<int> count(kProducers * kPerProducer, 0);
  for (const auto& s : seen) {
    std::vector<int> last(kProducers, -1);
    for (auto [p, i] : s) {
      ++count[p * kPerProducer + i];
      EXPECT(i > last[p], ": a consumer saw producer ", p, "'s items out of order");
      last[p] = i;
    }
  }
  for (size_t k = 0; k < count.size(); ++k) {
    REQUIRE(count[k] == 1, ": item ", k, " was popped ", count[k], " times");
  }
}

// =======================================================================================
// ThreadPool
// =======================================================================================

FERRY_TEST(pool_runs_each_task_exactly_once) {
  constexpr int kTasks = 5000;
  std::vector<std::atomic<int>> runs(kTasks);
  std::atomic<int> done{0};
  std::atomic<int> arrived{0};
  std::atomic<bool> met{false};
  std::mutex m;
  std::set<std::thread::id> ids;
  ThreadPool pool(4, 64);
  EXPECT_EQ(pool.num_threads(), 4u);
  for (int i = 0; i < kTasks; ++i) {
    const bool queued = pool.submit([&, i] {
      if (i < 2) {  // the first two meet: two threads run tasks at the same time
        arrived.fetch_add(1);
        if (eventually([&] { return arrived.load() >= 2; })) met.store(true);
      }
      runs[i].fetch_add(1);
      {
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
      }
      done.fetch_add(1);
    });
    REQUIRE(queued);
  }
  EXPECT(eventually([&] { return done.load() == kTasks; }, kPatience), ": ", done.load(),
         " of ", kTasks, " tasks ran");
  pool.shutdown();
  for (int i = 0; i < kTasks; ++i) {
    REQUIRE(runs[i].load() == 1, ": task ", i, " ran ", runs[i].load(), " times");
  }
  EXPECT(met.load(), ": two tasks never ran concurrently");
  EXPECT(ids.size() >= 2u, ": tasks ran on ", ids.size(), " thread(s)");
  EXPECT(ids.count(std::this_thread::get_id()) == 0, ": a task ran on the submitting thread");
}

FERRY_TEST(pool_rejects_zero_threads) {
  EXPECT_THROWS(ThreadPool(0, 4), "at least one thread");
}

FERRY_TEST(pool_shutdown_joins_and_is_idempotent) {
  std::atomic<int> started{0}, finished{0};
  ThreadPool pool(2, 8);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(pool.submit([&] {
      started.fetch_add(1);
      sleep_ms(50);
      finished.fetch_add(1);
    }));
  }
  REQUIRE(eventually([&] { return started.load() == 2; }));
  const auto t0 = Clock::now();
  pool.shutdown();
  EXPECT_EQ(finished.load(), 2);  // running tasks complete before shutdown() returns
  EXPECT(seconds_since(t0) < kPrompt);
  pool.shutdown();  // idempotent
  pool.shutdown();
}

FERRY_TEST(pool_submit_after_shutdown_fails) {
  std::atomic<bool> ran{false};
  ThreadPool pool(2, 4);
  pool.shutdown();
  EXPECT(!pool.submit([&] { ran.store(true); }), ": submit() after shutdown() succeeded");
  sleep_ms(10);
  EXPECT(!ran.load());
}

FERRY_TEST(pool_shutdown_drops_queued_tasks) {
  Gate gate;
  std::atomic<bool> first_started{false};
  std::atomic<int> ran{0};
  ThreadPool pool(1, 8);
  REQUIRE(pool.submit([&] {
    first_started.store(true);
    gate.wait();
  }));
  REQUIRE(eventually([&] { return first_started.load(); }));
  for (int i = 0; i < 5; ++i) REQUIRE(pool.submit([&] { ran.fetch_add(1); }));
  Async shutter([&] { pool.shutdown(); });
  // submit() fails once shutdown() closed the queue (it may block on a full queue first).
  EXPECT(eventually([&] { return !pool.submit([&] { ran.fetch_add(1); }); }),
         ": submit() kept succeeding during shutdown()");
  EXPECT(!shutter.done(), ": shutdown() returned while a task was still running");
  gate.open();
  EXPECT(shutter.wait_done(), ": shutdown() did not return after the running task ended");
  EXPECT_EQ(ran.load(), 0);  // queued tasks were dropped, not run
}

FERRY_TEST(pool_destructor_with_queued_tasks_returns) {
  Gate gate;
  std::atomic<int> ran{0};
  auto pool = std::make_unique<ThreadPool>(2, 64);
  for (int i = 0; i < 50; ++i) {
    REQUIRE(pool->submit([&] {
      gate.wait();
      ran.fetch_add(1);
    }));
  }
  Async destroyer([&] { pool.reset(); });
  sleep_ms(50);
  gate.open();
  EXPECT(destroyer.wait_done(), ": ~ThreadPool() with queued tasks did not return");
  EXPECT(ran.load() <= 50);
}

// =======================================================================================
// StridedArray
// =======================================================================================

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

// =======================================================================================
// IndexPlan
// =======================================================================================

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

// =======================================================================================
// StagingRing
// =======================================================================================

FERRY_TEST(ring_reuse_needs_release_and_not_in_use) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(2, factory_of(f));
  EXPECT_EQ(ring.capacity(), 2u);
  auto a = ring.acquire(100);
  REQUIRE(a && a->size() >= 100);
  // Claimed, not released: never handed out again.
  auto b = ring.acquire(100);
  REQUIRE(b);
  EXPECT(b != a, ": a claimed buffer was handed out twice");
  // a: released but still in use (a user's tensor views it) -> not reused.
  as_test_buffer(a)->hold();
  ring.release(a.get());
  // b: released and unused -> reused.
  ring.release(b.get());
  auto c = ring.acquire(100);
  EXPECT(c == b, ": a released, unused slot was not reused");
  // Both slots busy now (a in use, c claimed): a fresh untracked buffer.
  const int calls = f->calls.load();
  auto d = ring.acquire(100);
  REQUIRE(d);
  EXPECT(d != a && d != c, ": a busy slot was handed out");
  EXPECT_EQ(f->calls.load(), calls + 1);
  EXPECT_EQ(ring.untracked_allocations(), 1u);
  EXPECT_EQ(ring.slots(), 2u);
  // Not reused while in use even though released...
  auto e = ring.acquire(100);
  EXPECT(e != a);
  EXPECT_EQ(ring.untracked_allocations(), 2u);
  // ...and reused once the last view is gone.
  as_test_buffer(a)->drop();
  auto g = ring.acquire(100);
  EXPECT(g == a, ": a released slot with no users was not reused");
  // In use but never released: still not reusable.
  as_test_buffer(g)->hold();
  as_test_buffer(g)->drop();
  auto h = ring.acquire(100);
  EXPECT(h != g, ": a slot was reused without release()");
  // Releasing an untracked buffer is a no-op.
  ring.release(d.get());
  ring.release(nullptr);
  EXPECT_EQ(ring.slots(), 2u);
}

FERRY_TEST(ring_capacity_bounds_tracked_slots) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(3, factory_of(f));
  std::vector<std::shared_ptr<Buffer>> got;
  for (int i = 0; i < 10; ++i) got.push_back(ring.acquire(64));
  EXPECT_EQ(ring.slots(), 3u);
  EXPECT_EQ(ring.bytes(), 3u * 64u);
  EXPECT_EQ(ring.untracked_allocations(), 7u);
  EXPECT_EQ(f->calls.load(), 10);
  std::set<Buffer*> distinct;
  for (auto& b : got) distinct.insert(b.get());
  EXPECT_EQ(distinct.size(), 10u);
  // Releasing the tracked ones makes exactly those reusable again.
  for (auto& b : got) ring.release(b.get());
  std::set<Buffer*> reused;
  for (int i = 0; i < 3; ++i) reused.insert(ring.acquire(64).get());
  EXPECT_EQ(f->calls.load(), 10);
  for (int i = 0; i < 3; ++i) EXPECT(reused.count(got[static_cast<size_t>(i)].get()) == 1);
  EXPECT_EQ(ring.untracked_allocations(), 7u);
}

FERRY_TEST(ring_replaces_too_small_free_slot) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(1, factory_of(f));
  auto small = ring.acquire(100);
  ring.release(small.get());
  auto big = ring.acquire(1000);
  REQUIRE(big);
  EXPECT(big != small);
  EXPECT(big->size() >= 1000u);
  EXPECT_EQ(ring.slots(), 1u);
  EXPECT_EQ(ring.bytes(), 1000u);
  EXPECT_EQ(ring.untracked_allocations(), 0u);
  // A bigger free slot serves a smaller request.
  ring.release(big.get());
  EXPECT(ring.acquire(10) == big);
  ring.release(big.get());
  // A too-small slot that is still in use is not replaced: untracked instead.
  StagingRing ring2(1, factory_of(f));
  auto s = ring2.acquire(100);
  as_test_buffer(s)->hold();
  ring2.release(s.get());
  auto t = ring2.acquire(1000);
  EXPECT(t != s);
  EXPECT_EQ(ring2.untracked_allocations(), 1u);
  EXPECT_EQ(ring2.bytes(), 100u);
  as_test_buffer(s)->drop();
  // With a free slot too small and a free slot big enough, the big one is used.
  StagingRing ring3(2, factory_of(f));
  auto x = ring3.acquire(50);
  auto y = ring3.acquire(500);
  ring3.release(x.get());
  ring3.release(y.get());
  EXPECT(ring3.acquire(400) == y);
  EXPECT_EQ(ring3.bytes(), 550u);
}

FERRY_TEST(ring_capacity_zero_never_reuses) {
  auto f = std::make_shared<TestFactory>();
  StagingRing ring(0, factory_of(f));
  std::set<Buffer*> seen;
  std::vector<std::shared_ptr<Buffer>> keep;  // keep them alive: addresses stay distinct
  for (int i = 0; i < 5; ++i) {
    auto b = ring.acquire(64);
    REQUIRE(b && b->size() >= 64u);
    EXPECT(seen.insert(b.get()).second, ": capacity 0 reused a buffer");
    ring.release(b.get());
    keep.push_back(b);
  }
  EXPECT_EQ(f->calls.load(), 5);
  EXPECT_EQ(ring.slots(), 0u);
  EXPECT_EQ(ring.bytes(), 0u);
}

FERRY_TEST(ring_factory_checks) {
  EXPECT_THROWS(StagingRing(2, BufferFactory()), "factory");
  auto f = std::make_shared<TestFactory>();
  f->short_if = [](size_t n) { return n > 100; };
  StagingRing ring(1, factory_of(f));
  EXPECT_THROWS(ring.acquire(1000), "too little");
  EXPECT_EQ(ring.slots(), 0u);
  auto a = ring.acquire(100);  // tracked
  EXPECT_THROWS(ring.acquire(1000), "too little");  // untracked path
  ring.release(a.get());
  EXPECT_THROWS(ring.acquire(1000), "too little");  // growing the free slot
  StagingRing null_ring(1, [](size_t) { return std::shared_ptr<Buffer>(); });
  EXPECT_THROWS(null_ring.acquire(1), "too little");
}

FERRY_TEST(ring_concurrent_claims_are_exclusive) {
  // Threads acquire, write, sometimes keep the buffer "in use" past release(); a buffer
  // must never be handed to a second party while claimed or in use.
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(3, factory_of(f));
  std::atomic<int> conflicts{0};
  std::vector<std::unique_ptr<Async>> threads;
  for (int t = 0; t < 4; ++t) {
    threads.push_back(std::make_unique<Async>([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < 3000; ++i) {
        auto b = ring->acquire(static_cast<size_t>(64 + rng() % 64));
        TestBuffer* tb = as_test_buffer(b);
        if (tb->owner.exchange(1) != 0) conflicts.fetch_add(1);
        const uint8_t mark = static_cast<uint8_t>(t * 16 + i);
        std::memset(tb->data(), mark, 64);
        if (rng() % 2 == 0) {
          tb->hold();
          ring->release(tb);
          // A user still reads the memory after the claim ended.
          for (int k = 0; k < 64; ++k) {
            if (tb->data()[k] != mark) conflicts.fetch_add(1);
          }
          tb->owner.store(0);
          tb->drop();
        } else {
          tb->owner.store(0);
          ring->release(tb);
        }
      }
    }));
  }
  threads.clear();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT(ring->slots() <= 3u);
}

// kWait: with every slot released but its copy still running, acquire() waits for the
// oldest slot's copy and reuses it, allocating nothing.
FERRY_TEST(ring_wait_mode_waits_for_the_oldest_copy) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f), StagingRing::WhenFull::kWait);
  auto first = ring->acquire(64), second = ring->acquire(64);
  for (const auto& b : {first, second}) {
    as_test_buffer(b)->start_copy();
    ring->release(b.get());
  }
  std::shared_ptr<Buffer> got;
  Async waiter([&] { got = ring->acquire(64); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT(!waiter.done(), ": acquire() returned while every slot's copy was running");
  as_test_buffer(second)->finish_copy();  // not the one it waits for
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT(!waiter.done(), ": acquire() did not wait for the oldest copy");
  as_test_buffer(first)->finish_copy();
  REQUIRE(waiter.wait_done());
  EXPECT(got == first || got == second);
  EXPECT_EQ(ring->slots(), 2u);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
  EXPECT_EQ(ring->copy_waits(), 1u);
  EXPECT_EQ(f->calls.load(), 2);
}

// kWait never waits for what is not a copy (a user's view): it allocates around it, at
// once, as kAllocate does.
FERRY_TEST(ring_wait_mode_allocates_around_a_held_slot) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(1, factory_of(f), StagingRing::WhenFull::kWait);
  auto held = ring->acquire(64);
  as_test_buffer(held)->hold();
  ring->release(held.get());
  std::shared_ptr<Buffer> got;
  Async taker([&] { got = ring->acquire(64); });
  REQUIRE(taker.wait_done());
  EXPECT(got != held);
  EXPECT_EQ(ring->untracked_allocations(), 1u);
  as_test_buffer(held)->drop();
}

// kWait under contention: producers fill slots and hand them to a slow "copy engine"
// that checks the bytes before finishing each copy; no slot is refilled before its copy
// finished, and the ring, with more slots than claimers, never allocates beyond them.
FERRY_TEST(ring_wait_mode_concurrent_copies_are_exclusive) {
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(6, factory_of(f), StagingRing::WhenFull::kWait);
  std::atomic<int> conflicts{0};
  struct Pending {
    TestBuffer* buffer;
    uint8_t mark;
  };
  BoundedQueue<Pending> engine_queue(1024);
  Async engine([&] {
    int n = 0;
    while (auto p = engine_queue.pop()) {
      if (p->buffer == nullptr) return;  // the producers are done
      if (++n % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      for (int k = 0; k < 64; ++k) {
        if (p->buffer->data()[k] != p->mark) conflicts.fetch_add(1);
      }
      p->buffer->owner.store(0);
      p->buffer->finish_copy();
    }
  });
  {
    std::vector<std::unique_ptr<Async>> producers;
    for (int t = 0; t < 4; ++t) {
      producers.push_back(std::make_unique<Async>([&, t] {
        for (int i = 0; i < 1500; ++i) {
          auto b = ring->acquire(64);
          TestBuffer* tb = as_test_buffer(b);
          if (tb->owner.exchange(1) != 0) conflicts.fetch_add(1);
          const uint8_t mark = static_cast<uint8_t>(t * 16 + i);
          std::memset(tb->data(), mark, 64);
          tb->start_copy();
          ring->release(tb);
          engine_queue.push(Pending{tb, mark});
        }
      }));
    }
  }
  engine_queue.push(Pending{nullptr, 0});
  engine.join();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
  EXPECT(ring->slots() <= 6u);
  EXPECT(ring->copy_waits() > 0u, ": the producers never outran the engine");
}

// =======================================================================================
// GatherPipeline
// =======================================================================================

FERRY_TEST(gather_batch_layout) {
  const auto l = BatchLayout::make({60, 16, 1, 0, 8}, 5);
  REQUIRE(l.offsets.size() == 5u);
  EXPECT_EQ(l.offsets[0], 0);
  EXPECT_EQ(l.offsets[1], 320);  // 300 rounded up to 64
  EXPECT_EQ(l.offsets[2], 448);  // 320 + 80 -> 448
  EXPECT_EQ(l.offsets[3], 512);  // 448 + 5 -> 512
  EXPECT_EQ(l.offsets[4], 512);  // an empty column takes no room
  EXPECT_EQ(l.total_bytes, 576);
  const auto e = BatchLayout::make({60}, 0);
  EXPECT_EQ(e.total_bytes, 0);
}

FERRY_TEST(gather_in_order_bytes_match_source) {
  const auto order = run_many_batches(/*in_order=*/true, 300, /*hold_every=*/0);
  REQUIRE(order.size() == 300u);
  for (size_t i = 0; i < order.size(); ++i) {
    REQUIRE(order[i] == static_cast<int64_t>(i), ": in order, position ", i, " got seq ", order[i]);
  }
}

FERRY_TEST(gather_as_ready_delivers_each_batch_once) {
  const auto order = run_many_batches(/*in_order=*/false, 300, /*hold_every=*/0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(sorted.size() == 300u);
  for (size_t i = 0; i < sorted.size(); ++i) REQUIRE(sorted[i] == static_cast<int64_t>(i));
}

FERRY_TEST(gather_held_batches_are_never_overwritten) {
  run_many_batches(/*in_order=*/true, 200, /*hold_every=*/3);
  run_many_batches(/*in_order=*/false, 200, /*hold_every=*/2);
}

FERRY_TEST(gather_in_order_waits_for_a_slow_batch) {
  // Batch 0 is held in the buffer factory; batch 1 completes first but is delivered
  // second. (Capacity 0: the factory runs outside the ring's lock.)
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 5);
  REQUIRE(slow != batch_bytes(fx, 3));
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  const std::vector<int64_t> b0 = {0, 1, 2, 3, 4}, b1 = {-1, 50, 41};
  EXPECT_EQ(p.submit(b0), 0);
  EXPECT_EQ(p.submit(b1), 1);
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1 && f->calls.load() == 2; }));
  // Batch 1 is ready (its factory call returned); give finish() a moment.
  sleep_ms(20);
  EXPECT(!p.next(0.05).has_value(), ": in order, a batch was delivered before batch 0");
  f->gate.open();
  auto first = p.next(kPatience);
  REQUIRE(first.has_value());
  EXPECT_EQ(first->seq, 0);
  VERIFY_BATCH(fx, *first, b0);
  auto second = p.next(kPatience);
  REQUIRE(second.has_value());
  EXPECT_EQ(second->seq, 1);
  VERIFY_BATCH(fx, *second, b1);
}

FERRY_TEST(gather_as_ready_does_not_wait_for_a_slow_batch) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 5);
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/false);
  const std::vector<int64_t> b0 = {0, 1, 2, 3, 4}, b1 = {-1, 50, 41};
  p.submit(b0);
  p.submit(b1);
  auto first = p.next(kPatience);
  REQUIRE(first.has_value(), ": batch 1 was not delivered while batch 0 was stuck");
  EXPECT_EQ(first->seq, 1);
  VERIFY_BATCH(fx, *first, b1);
  EXPECT(!p.next(0.05).has_value());
  f->gate.open();
  auto second = p.next(kPatience);
  REQUIRE(second.has_value());
  EXPECT_EQ(second->seq, 0);
  VERIFY_BATCH(fx, *second, b0);
}

FERRY_TEST(gather_rejected_index_position) {
  GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  const int64_t n = fx.length();
  GatherPipeline p(fx.plan(), fx.arrays(), 3, 8, ring, /*in_order=*/true);
  const std::vector<std::pair<std::vector<int64_t>, int64_t>> cases = {
      {{0, 1, n, 2}, 2},
      {{-n - 1}, 0},
      {{5, -n, n - 1, n + 7, -n - 1}, 3},
      {{3, 4, 5}, -1},  // a good batch between rejected ones
      {{n - 1, -n, 1000000}, 2},
  };
  for (const auto& c : cases) p.submit(c.first);
  for (size_t k = 0; k < cases.size(); ++k) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    EXPECT_EQ(b->seq, static_cast<int64_t>(k));
    if (cases[k].second < 0) {
      VERIFY_BATCH(fx, *b, cases[k].first);
    } else {
      EXPECT_EQ(b->rejected_position, cases[k].second);
      EXPECT(!b->buffer, ": a rejected batch holds a buffer");
      EXPECT(b->error.empty());
    }
    p.release(*b);
  }
  // A Subset's stored index the child rejects is reported at its position too.
  fx.ref = ref_concat({ref_subset(ref_leaf(0, 50), {0, 50, -51, 49}), ref_leaf(1, 37)});
  GatherPipeline q(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/false);
  q.submit({0, 3, 1});
  q.submit({4, 2});
  std::map<int64_t, int64_t> rejected;
  for (int k = 0; k < 2; ++k) {
    auto b = q.next(kPatience);
    REQUIRE(b.has_value());
    rejected[b->seq] = b->rejected_position;
  }
  EXPECT_EQ(rejected[0], 2);
  EXPECT_EQ(rejected[1], 1);
}

FERRY_TEST(gather_empty_batch_is_rejected) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  EXPECT_EQ(p.submit({}), 0);
  EXPECT_EQ(p.submit({7}), 1);
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  EXPECT_EQ(b->seq, 0);
  EXPECT_EQ(b->rejected_position, 0);
  EXPECT_EQ(b->rows, 0);
  EXPECT(!b->buffer);
  auto c = p.next(kPatience);
  REQUIRE(c.has_value());
  VERIFY_BATCH(fx, *c, std::vector<int64_t>{7});
}

FERRY_TEST(gather_factory_failure_becomes_batch_error) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t throws = batch_bytes(fx, 4), short_ = batch_bytes(fx, 6);
  REQUIRE(throws != short_ && throws != batch_bytes(fx, 2));
  f->throw_if = [throws](size_t n) { return static_cast<int64_t>(n) == throws; };
  f->short_if = [short_](size_t n) { return static_cast<int64_t>(n) == short_; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  p.submit({0, 1, 2, 3});
  p.submit({0, 1, 2, 3, 4, 5});
  p.submit({8, 9});
  auto a = p.next(kPatience);
  REQUIRE(a.has_value());
  EXPECT(a->error.find("no memory") != std::string::npos, ": error was \"", a->error, "\"");
  EXPECT(!a->buffer);
  EXPECT_EQ(a->rejected_position, -1);
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  EXPECT(b->error.find("too little") != std::string::npos, ": error was \"", b->error, "\"");
  EXPECT(!b->buffer);
  auto c = p.next(kPatience);
  REQUIRE(c.has_value());
  VERIFY_BATCH(fx, *c, std::vector<int64_t>({8, 9}));
}

// A budget counts charges up to its limit, refuses the one beyond with a message that
// says what was asked, what is in use and the limit, and counts nothing for it.
FERRY_TEST(budget_limits_charges_and_reports_the_process_total) {
  using ferry::MemoryKind;
  const uint64_t pinned0 = ferry::process_memory(MemoryKind::kPinned);
  const uint64_t shared0 = ferry::process_memory(MemoryKind::kShared);
  auto budget = std::make_shared<ferry::MemoryBudget>(1000);
  {
    ferry::BudgetCharge a(budget, 600, MemoryKind::kPinned, "slot a");
    EXPECT_EQ(budget->used(), 600u);
    EXPECT_EQ(ferry::process_memory(MemoryKind::kPinned), pinned0 + 600);
    std::string message;
    try {
      ferry::BudgetCharge b(budget, 401, MemoryKind::kShared, "slot b");
    } catch (const ferry::Error& e) {
      message = e.what();
    }
    EXPECT(message.find("slot b needs 401 B of shared memory") != std::string::npos, message);
    EXPECT(message.find("600 B of the budget are in use") != std::string::npos, message);
    EXPECT(message.find("memory_budget=1000") != std::string::npos, message);
    EXPECT_EQ(budget->used(), 600u);
    EXPECT_EQ(ferry::process_memory(MemoryKind::kShared), shared0);
    ferry::BudgetCharge c(budget, 400, MemoryKind::kShared, "slot c");  // exactly the limit
    EXPECT_EQ(budget->used(), 1000u);
  }
  EXPECT_EQ(budget->used(), 0u);
  EXPECT_EQ(ferry::process_memory(MemoryKind::kPinned), pinned0);
  EXPECT_EQ(ferry::process_memory(MemoryKind::kShared), shared0);
  // no limit: everything is counted, nothing refused
  auto unlimited = std::make_shared<ferry::MemoryBudget>(0);
  ferry::BudgetCharge big(unlimited, uint64_t{1} << 40, MemoryKind::kPinned, "big");
  EXPECT_EQ(unlimited->used(), uint64_t{1} << 40);
  EXPECT(ferry::format_bytes(1536) == "1.5 KiB", ferry::format_bytes(1536));
}

// Charges from many threads against one budget never go beyond its limit.
FERRY_TEST(budget_concurrent_charges_stay_within_the_limit) {
  auto budget = std::make_shared<ferry::MemoryBudget>(10 * 64);
  std::atomic<int> refused{0};
  std::atomic<uint64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        try {
          ferry::BudgetCharge c(budget, 64, ferry::MemoryKind::kPinned, "x");
          uint64_t now = budget->used(), seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
        } catch (const ferry::Error&) {
          ++refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT(peak.load() <= 10u * 64, ": peak ", peak.load());
  EXPECT_EQ(budget->used(), 0u);
}

// The transfer step runs on each filled batch in a gather thread; what it makes arrives
// with the batch, and an exception it throws becomes the batch's error, its slot freed.
FERRY_TEST(gather_transfer_step_payload_and_errors) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(6, factory_of(f));
  const auto main_thread = std::this_thread::get_id();
  std::atomic<bool> ran_on_main{false};
  ferry::TransferStep step = [&](Batch& b) {
    if (std::this_thread::get_id() == main_thread) ran_on_main = true;
    if (b.rows == 3) throw std::runtime_error("copy failed: device gone");
    // the step sees the filled bytes: it keeps a copy of column 0 as its "output"
    const uint8_t* col = b.buffer->data() + b.layout.offsets[0];
    b.transfer = std::make_shared<std::vector<uint8_t>>(
        col, col + fx.row_bytes()[0] * b.rows);
  };
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true, step);
  const std::vector<int64_t> ok = {5, 60, -1, 7}, bad = {1, 2, 3};
  p.submit(ok);
  p.submit(bad);
  p.submit(ok);
  for (int k = 0; k < 3; ++k) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    if (k == 1) {
      EXPECT(b->error.find("device gone") != std::string::npos, ": error was \"", b->error, "\"");
      EXPECT(!b->buffer && !b->transfer);
      continue;
    }
    VERIFY_BATCH(fx, *b, ok);
    REQUIRE(b->transfer != nullptr);
    const auto& out = *std::static_pointer_cast<std::vector<uint8_t>>(b->transfer);
    EXPECT(out == expected_column(fx, ok, 0), ": the step's output differs from the source");
    p.release(*b);
  }
  EXPECT(!ran_on_main.load(), ": the transfer step ran on the consumer's thread");
  // Every slot went back, the failed batch's too: as many claims as there are slots are
  // served without making another one.
  const size_t slots = ring->slots();
  std::vector<std::shared_ptr<Buffer>> claims;
  for (size_t k = 0; k < slots; ++k) claims.push_back(ring->acquire(1));
  EXPECT(ring->slots() == slots, ": a slot was never returned (", ring->slots(), " after ",
         slots, " claims)");
}

// An asynchronous copy (as to a device): the step starts it and keeps the slot in use
// until it completed; the consumer releases the batch at once. A slot reused before its
// copy completed would show as a copy that differs from the source.
FERRY_TEST(gather_slot_not_reused_before_its_transfer_completed) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(3, factory_of(f));
  struct Copy {
    std::shared_ptr<Buffer> from;
    int64_t offset, bytes;
    std::vector<uint8_t> out;
    std::atomic<bool> done{false};
  };
  BoundedQueue<std::shared_ptr<Copy>> engine_queue(64);
  std::thread engine([&] {  // a slow "copy engine": copies late, then frees the slot
    while (auto c = engine_queue.pop()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const uint8_t* src = (*c)->from->data() + (*c)->offset;
      (*c)->out.assign(src, src + (*c)->bytes);
      (*c)->done = true;
      as_test_buffer((*c)->from)->drop();
    }
  });
  struct StopEngine {  // also when a REQUIRE below throws
    BoundedQueue<std::shared_ptr<Copy>>& queue;
    std::thread& thread;
    ~StopEngine() {
      queue.close();
      if (thread.joinable()) thread.join();
    }
  } stop_engine{engine_queue, engine};
  ferry::TransferStep step = [&](Batch& b) {
    auto c = std::make_shared<Copy>();
    c->from = b.buffer;
    c->offset = b.layout.offsets[0];
    c->bytes = fx.row_bytes()[0] * b.rows;
    as_test_buffer(b.buffer)->hold();  // in use until the copy completed
    b.transfer = c;
    if (!engine_queue.push(c)) throw std::runtime_error("the copy engine stopped");
  };
  std::vector<std::pair<std::shared_ptr<Copy>, std::vector<int64_t>>> copies;
  {
    GatherPipeline p(fx.plan(), fx.arrays(), 3, 3, ring, /*in_order=*/false, step);
    std::mt19937 rng(7);
    std::map<int64_t, std::vector<int64_t>> pending;
    int submitted = 0;
    constexpr int kBatches = 60;
    while (submitted < kBatches || !pending.empty()) {
      while (submitted < kBatches && pending.size() < 3) {
        auto idx = random_batch(rng, fx.length(), 40);
        pending[p.submit(idx)] = idx;
        ++submitted;
      }
      auto b = p.next(kPatience);
      REQUIRE(b.has_value() && b->error.empty());
      copies.emplace_back(std::static_pointer_cast<Copy>(b->transfer), pending[b->seq]);
      pending.erase(b->seq);
      p.release(*b);  // at once, before the copy is done
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (const auto& [c, idx] : copies) {
    while (!c->done.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    REQUIRE(c->done.load(), " a copy never completed");
    EXPECT(c->out == expected_column(fx, idx, 0), ": a slot was refilled before its copy");
  }
  EXPECT(ring->untracked_allocations() > 0,
         ": the copies never outlasted the ring (the test did not test reuse under load)");
}

FERRY_TEST(gather_max_in_flight_is_enforced) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 2, ring, /*in_order=*/true);
  p.submit({0});
  p.submit({1});
  EXPECT_EQ(p.in_flight(), 2);
  EXPECT_THROWS(p.submit({2}), "in flight");
  EXPECT_EQ(p.in_flight(), 2);
  auto a = p.next(kPatience);
  REQUIRE(a.has_value());
  EXPECT_EQ(a->seq, 0);
  p.release(*a);
  EXPECT_EQ(p.in_flight(), 1);
  EXPECT_EQ(p.submit({2}), 2);  // the failed submit used no sequence number
  EXPECT_THROWS(p.submit({3}), "in flight");
  for (int64_t want : {1, 2}) {
    auto b = p.next(kPatience);
    REQUIRE(b.has_value());
    EXPECT_EQ(b->seq, want);
    VERIFY_BATCH(fx, *b, std::vector<int64_t>{want});
    p.release(*b);
  }
}

FERRY_TEST(gather_next_without_batch_throws_and_times_out) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(fx.plan(), fx.arrays(), 2, 4, ring, /*in_order=*/true);
  // Nothing submitted: an error, not a wait (with or without a timeout).
  EXPECT_THROWS(p.next(0.05), "no batch in flight");
  EXPECT_THROWS(p.next(0), "no batch in flight");
  p.submit({1, 2, 3});
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  const auto t0 = Clock::now();
  auto none = p.next(0.05);
  const double waited = seconds_since(t0);
  EXPECT(!none.has_value(), ": next() returned a batch still being gathered");
  EXPECT(waited >= 0.045, ": next(0.05) returned after ", waited, " s");
  EXPECT(waited < kPrompt, ": next(0.05) took ", waited, " s");
  EXPECT_EQ(p.in_flight(), 1);
  f->gate.open();
  auto b = p.next(kPatience);
  REQUIRE(b.has_value());
  VERIFY_BATCH(fx, *b, std::vector<int64_t>({1, 2, 3}));
  p.release(*b);
  EXPECT_EQ(p.in_flight(), 0);
  EXPECT_THROWS(p.next(0.05), "no batch in flight");
}

FERRY_TEST(gather_close_while_gathering_is_prompt) {
  // Large batches of 4 KiB rows read with a 1 KiB stride (an int16 array's transpose),
  // many threads; close() as soon as the first batch started.
  View v = make_view({512, 2048}, {2, 1024}, 2, 5);
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(8, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(plan_of(ref_leaf(0, 512)),
                                            std::vector<std::vector<StridedArray>>{{v.array()}},
                                            4, 6, ring, /*in_order=*/true);
  std::mt19937 rng(3);
  for (int k = 0; k < 6; ++k) {
    std::vector<int64_t> idx(2048);
    for (auto& i : idx) i = static_cast<int64_t>(rng() % 1024) - 512;
    p->submit(std::move(idx));
  }
  REQUIRE(eventually([&] { return f->calls.load() >= 1; }));
  const auto t0 = Clock::now();
  p->close();
  const double took = seconds_since(t0);
  EXPECT(took < kPrompt, ": close() took ", took, " s");
  EXPECT_THROWS(p->next(0.05), "closed");
  EXPECT_THROWS(p->next(0), "closed");
  EXPECT_THROWS(p->submit({0}), "closed");
  p->close();  // idempotent
  const auto t1 = Clock::now();
  p.reset();
  EXPECT(seconds_since(t1) < kPrompt);
  EXPECT(ring->slots() <= 8u);
}

FERRY_TEST(gather_close_stops_a_running_batch) {
  // One batch of 1000 rows waits in the buffer factory (a ring slot being allocated);
  // close() is called; then the factory returns. The gather must stop at its next row
  // block (the tail of the buffer is never written, the slot goes back to the ring), and
  // close() waits for the thread.
  SimpleSource src(1000);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(1, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(src.plan(), src.arrays(), 2, 2, ring, true);
  p->submit(iota_batch(1000));
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async closer([&] { p->close(); });
  EXPECT(eventually([&] { return next_reports_closed(*p); }), ": close() did not close");
  sleep_ms(100);  // close() goes on to flag the threads to stop, then joins them
  EXPECT(!closer.done(), ": close() returned while a gather thread was still running");
  f->gate.open();
  EXPECT(closer.wait_done(), ": close() did not return once the gather thread could stop");
  closer.join();
  auto buffer = f->made_at(0);
  REQUIRE(buffer != nullptr);
  size_t untouched_from = buffer->size();
  while (untouched_from > 0 && buffer->data()[untouched_from - 1] == f->fill) --untouched_from;
  EXPECT(untouched_from <= 128u * 64u, ": the gather went on after close() up to byte ",
         untouched_from, " of ", buffer->size());
  // The stopped batch gave its slot back.
  const int calls = f->calls.load();
  EXPECT(ring->acquire(buffer->size()) == buffer, ": the stopped batch kept its slot");
  EXPECT_EQ(f->calls.load(), calls);
  EXPECT_THROWS(p->submit({0}), "closed");
}

FERRY_TEST(gather_close_wakes_a_waiting_next) {
  SimpleSource src(100);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  GatherPipeline p(src.plan(), src.arrays(), 1, 2, ring, true);
  p.submit({1, 2});
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  std::atomic<int> outcome{0};  // 1: threw ferry::Error, 2: returned
  Async waiter([&] {
    try {
      p.next(0);  // no timeout
      outcome.store(2);
    } catch (const ferry::Error&) {
      outcome.store(1);
    }
  });
  sleep_ms(30);
  EXPECT(!waiter.done(), ": next() returned while the batch was still being gathered");
  Async closer([&] { p.close(); });
  // The waiter is woken by close() itself, while the gather thread is still stuck.
  EXPECT(waiter.wait_done(), ": close() did not wake a waiter in next()");
  EXPECT_EQ(outcome.load(), 1);
  f->gate.open();
  EXPECT(closer.wait_done());
}

FERRY_TEST(gather_second_close_waits_for_threads) {
  // close() from two threads: the contract is that the arrays' memory may be freed once
  // close() returns, so the second caller too must only return after the threads stopped.
  SimpleSource src(1000);
  auto f = std::make_shared<TestFactory>();
  f->block_if = [](size_t) { return true; };
  auto ring = std::make_shared<StagingRing>(0, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(src.plan(), src.arrays(), 1, 2, ring, true);
  p->submit(iota_batch(1000));
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async first([&] { p->close(); });
  REQUIRE(eventually([&] { return next_reports_closed(*p); }));
  Async opener([&] {
    sleep_ms(200);
    f->gate.open();
  });
  p->close();
  const int still_running = f->blocked_now.load();
  EXPECT_EQ(still_running, 0);  // 1: close() returned while a gather thread ran
  opener.join();
  EXPECT(first.wait_done());
  first.join();
  p.reset();
}

FERRY_TEST(gather_destructor_joins_and_frees_slots) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  const int64_t slow = batch_bytes(fx, 40);
  f->block_if = [slow](size_t n) { return static_cast<int64_t>(n) == slow; };
  auto ring = std::make_shared<StagingRing>(4, factory_of(f));
  auto p = std::make_unique<GatherPipeline>(fx.plan(), fx.arrays(), 2, 4, ring, true);
  p->submit({0, 1});
  p->submit({2, 3});
  REQUIRE(eventually([&] { return f->calls.load() == 2; }));
  p->submit(iota_batch(40));  // blocks in the factory (holding the ring's lock)
  REQUIRE(eventually([&] { return f->blocked_now.load() == 1; }));
  Async destroyer([&] { p.reset(); });
  sleep_ms(100);
  EXPECT(!destroyer.done(), ": the destructor returned while a gather thread was running");
  f->gate.open();
  EXPECT(destroyer.wait_done(), ": the destructor did not return");
  destroyer.join();
  EXPECT_EQ(f->blocked_now.load(), 0);
  // Every slot went back to the ring: the same sizes are served without allocating.
  EXPECT_EQ(ring->slots(), 3u);
  const int calls = f->calls.load();
  std::vector<std::shared_ptr<Buffer>> again;
  const auto small = static_cast<size_t>(batch_bytes(fx, 2));
  for (int k = 0; k < 3; ++k) again.push_back(ring->acquire(small));
  EXPECT_EQ(f->calls.load(), calls);
  EXPECT_EQ(ring->untracked_allocations(), 0u);
}

FERRY_TEST(gather_constructor_checks) {
  const GatherFixture fx = make_gather_fixture();
  auto f = std::make_shared<TestFactory>();
  auto ring = std::make_shared<StagingRing>(2, factory_of(f));
  EXPECT_THROWS(GatherPipeline(fx.plan(), {}, 1, 1, ring, true), "at least one leaf");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 1, 1, nullptr, true), "staging ring");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 1, 0, ring, true), "max_in_flight");
  EXPECT_THROWS(GatherPipeline(fx.plan(), fx.arrays(), 0, 1, ring, true), "at least one thread");
  auto fewer = fx.arrays();
  fewer[1].pop_back();
  EXPECT_THROWS(GatherPipeline(fx.plan(), fewer, 1, 1, ring, true), "numbers of columns");
  auto other = fx.arrays();
  const View wide = make_view({37, 4, 5}, {80, 20, 4}, 4, 1);
  other[1][0] = wide.array();
  EXPECT_THROWS(GatherPipeline(fx.plan(), other, 1, 1, ring, true), "different sizes");
  GatherPipeline ok(fx.plan(), fx.arrays(), 3, 5, ring, false);
  EXPECT_EQ(ok.num_threads(), 3u);
  EXPECT(ok.row_bytes() == std::vector<int64_t>({60, 16}));
  EXPECT_EQ(ok.in_flight(), 0);
}

// ------------------------------------------------------------------ SharedRingView

namespace {
// Anonymous shared memory, as a memfd mapping is between processes (survives fork).
struct SharedMemory {
  explicit SharedMemory(size_t n) : bytes(n) {
    base = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  ~SharedMemory() { ::munmap(base, bytes); }
  void* base;
  size_t bytes;
};
}  // namespace

FERRY_TEST(shared_ring_init_attach_and_layout) {
  const size_t slot_bytes = 4096;
  SharedMemory mem(ferry::SharedRingView::bytes_for(slot_bytes, 5));
  REQUIRE(mem.base != MAP_FAILED);
  EXPECT_THROWS(ferry::SharedRingView::attach(mem.base, mem.bytes), "no ferry ring");
  auto ring = ferry::SharedRingView::init(mem.base, slot_bytes, 5);
  auto seen = ferry::SharedRingView::attach(mem.base, mem.bytes);
  EXPECT_EQ(seen.slot_bytes(), slot_bytes);
  EXPECT_EQ(seen.nslots(), 5u);
  EXPECT(seen.slot(0) == ring.slot(0));
  EXPECT_EQ(static_cast<size_t>(seen.slot(4) - static_cast<uint8_t*>(mem.base)),
            ferry::SharedRingView::kHeaderBytes + 4 * slot_bytes);
  EXPECT_THROWS(seen.slot(5), "out of range");
  EXPECT_THROWS(ferry::SharedRingView::attach(mem.base, mem.bytes - 1), "larger than");
  EXPECT_THROWS(ferry::SharedRingView::init(mem.base, 100, 5), "multiple of 64");
  EXPECT_THROWS(ferry::SharedRingView::init(mem.base, 64, 0), "slots");
}

FERRY_TEST(shared_ring_claims_each_free_slot_once) {
  SharedMemory mem(ferry::SharedRingView::bytes_for(64, 3));
  auto ring = ferry::SharedRingView::init(mem.base, 64, 3);
  std::set<int32_t> claimed;
  for (int i = 0; i < 3; ++i) claimed.insert(ring.claim());
  EXPECT(claimed == (std::set<int32_t>{0, 1, 2}), " slots 0, 1 and 2");
  EXPECT_EQ(ring.claim(), -1);
  EXPECT_EQ(ring.count(ferry::SlotState::kFilling), 3u);
  ring.set(1, ferry::SlotState::kReady);
  ring.set(2, ferry::SlotState::kHeld);
  EXPECT_EQ(ring.claim(), -1);  // READY and HELD slots are not free
  ring.set(2, ferry::SlotState::kFree);
  EXPECT_EQ(ring.claim(), 2);
  EXPECT(ring.get(1) == ferry::SlotState::kReady);
}

FERRY_TEST(shared_ring_concurrent_claims_are_exclusive) {
  SharedMemory mem(ferry::SharedRingView::bytes_for(64, 64));
  auto ring = ferry::SharedRingView::init(mem.base, 64, 64);
  std::vector<std::thread> threads;
  std::vector<std::vector<int32_t>> got(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto mine = ferry::SharedRingView::attach(mem.base, mem.bytes);
      for (int32_t s; (s = mine.claim()) >= 0;) got[t].push_back(s);
    });
  }
  for (auto& th : threads) th.join();
  std::vector<int32_t> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  std::vector<int32_t> expected(64);
  for (int32_t i = 0; i < 64; ++i) expected[i] = i;
  EXPECT(all == expected, "every slot claimed exactly once");
}

FERRY_TEST(shared_ring_works_across_a_fork) {
  // The child (a worker) claims a slot, fills it and publishes it; the parent (the
  // consumer) sees the bytes once the state says READY, frees the slot, and the child
  // can claim it again.
  SharedMemory mem(ferry::SharedRingView::bytes_for(128, 1));
  auto ring = ferry::SharedRingView::init(mem.base, 128, 1);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto worker = ferry::SharedRingView::attach(mem.base, mem.bytes);
    for (int round = 0; round < 2; ++round) {
      int32_t s;
      while ((s = worker.claim()) < 0) std::this_thread::yield();
      std::memset(worker.slot(s), 0x40 + round, 128);
      worker.set(s, ferry::SlotState::kReady);
    }
    ::_exit(0);
  }
  for (int round = 0; round < 2; ++round) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ring.get(0) != ferry::SlotState::kReady && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    REQUIRE(ring.get(0) == ferry::SlotState::kReady, "the child published nothing");
    const uint8_t* p = ring.slot(0);
    EXPECT(std::all_of(p, p + 128, [&](uint8_t b) { return b == 0x40 + round; }));
    ring.set(0, ferry::SlotState::kFree);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

FERRY_TEST(gather_pipeline_in_a_forked_child_closes_without_hanging) {
  // A child forked while the pipeline's threads wait (a DataLoader worker forked by
  // another loader) may destroy its copy: that must neither join the parent's threads
  // nor wait on locks they hold.
  std::vector<uint8_t> data(16 * 4);
  std::vector<std::vector<ferry::StridedArray>> leaves(1);
  leaves[0].emplace_back(data.data(), std::vector<int64_t>{16, 4}, std::vector<int64_t>{4, 1}, 1);
  ferry::IndexPlan plan;
  plan.add_leaf(0, 16);
  auto ring = std::make_shared<ferry::StagingRing>(
      4, [](size_t n) -> std::shared_ptr<ferry::Buffer> {
        struct Vec : ferry::Buffer {
          explicit Vec(size_t n) : v(n) {}
          uint8_t* data() override { return v.data(); }
          size_t size() const override { return v.size(); }
          bool in_use() const override { return false; }
          std::vector<uint8_t> v;
        };
        return std::make_shared<Vec>(n);
      });
  auto pipeline = std::make_unique<ferry::GatherPipeline>(std::move(plan), std::move(leaves), 2, 4,
                                                          ring, true);
  pipeline->submit({1, 2, 3});
  REQUIRE(pipeline->next(5.0).has_value());
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    pipeline.reset();  // would hang in join() without the fork guard
    ::_exit(0);
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  EXPECT(done == pid, "the child hung destroying its copy of the pipeline");
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  pipeline->close();  // the parent's own pipeline still closes normally
}
