// The harness's registry, failure reports, per-case watchdog and main() (see harness.h).
#include "harness.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace harness {
namespace {

struct Case {
  const char* name;
  TestFn fn;
};

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

std::mutex report_mutex;

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

}  // namespace

std::atomic<int> failures{0};

Registrar::Registrar(const char* name, TestFn fn) { registry().push_back({name, fn}); }

void fail(const char* file, int line, const std::string& what) {
  failures.fetch_add(1);
  std::lock_guard<std::mutex> lock(report_mutex);
  std::fprintf(stderr, "  %s:%d: FAILED: %s\n", file, line, what.c_str());
  std::fflush(stderr);
}

}  // namespace harness

int main(int argc, char** argv) {
  const auto& cases = harness::registry();
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
