// The small harness of the C++ core's unit tests. Every tests/cpp/test_*.cpp is linked
// into one binary, ferry_core_tests: `ferry_core_tests <name>` runs one case, no argument
// runs them all, `--list` names them. CMake registers one ctest per line that starts with
// `FERRY_TEST(name)`, so a failure names its case.
//
// Timing: no test asserts that something was fast, only that it finished within a
// generous bound (kPrompt), so a loaded machine cannot make a test fail; a hang is caught
// by the per-case watchdog (harness.cpp).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "core/check.h"

namespace harness {

using TestFn = void (*)();

struct Registrar {
  Registrar(const char* name, TestFn fn);
};

extern std::atomic<int> failures;  // atomic: helper threads of a case may report too

// Records a failure of the running case (any thread may call it).
void fail(const char* file, int line, const std::string& what);

struct Abort {};  // thrown by REQUIRE: ends the current case

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

using Clock = std::chrono::steady_clock;

// What "promptly" means: far above any real latency, far below the watchdog.
inline constexpr double kPrompt = 2.0;
// How long a test waits for something that must happen (a batch, a thread).
inline constexpr double kPatience = 10.0;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

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
            fail(__FILE__, __LINE__, str("exception on a helper thread: ", e.what()));
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

#define EXPECT_EQ(a, b)                                                                    \
  do {                                                                                     \
    const auto& ferry_a_ = (a);                                                            \
    const auto& ferry_b_ = (b);                                                            \
    if (!(ferry_a_ == ferry_b_)) {                                                         \
      ::harness::fail(__FILE__, __LINE__,                                                  \
                      ::harness::str(#a " == " #b " (", ferry_a_, " vs ", ferry_b_, ")")); \
    }                                                                                      \
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
