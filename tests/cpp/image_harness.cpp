#include "image_harness.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

namespace image_harness {
namespace {

struct Case {
  const char* name;
  TestFn fn;
};

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

int failures = 0;

bool run_case(const Case& c) {
  const int before = failures;
  try {
    c.fn();
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    fail(__FILE__, __LINE__, str("unexpected exception: ", e.what()));
  } catch (...) {
    fail(__FILE__, __LINE__, "unexpected non-std exception");
  }
  const bool ok = failures == before;
  std::printf("%s: %s\n", c.name, ok ? "ok" : "FAILED");
  std::fflush(stdout);
  return ok;
}

}  // namespace

Registrar::Registrar(const char* name, TestFn fn) { registry().push_back({name, fn}); }

void fail(const char* file, int line, const std::string& what) {
  ++failures;
  std::fprintf(stderr, "  %s:%d: FAILED: %s\n", file, line, what.c_str());
  std::fflush(stderr);
}

}  // namespace image_harness

int main(int argc, char** argv) {
  using namespace image_harness;
  int failed = 0;
  int ran = 0;
  for (const Case& c : registry()) {
    if (argc > 1 && std::strcmp(argv[1], c.name) != 0) continue;
    ++ran;
    if (!run_case(c)) ++failed;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "(any)");
    return 2;
  }
  return failed == 0 ? 0 : 1;
}
