// A minimal harness for the image components' C++ tests: `ferry_image_tests <name>` runs
// one case, no argument runs them all; CMake registers one ctest per line that starts with
// `FERRY_IMAGE_TEST(name)`. Hangs are caught by ctest's per-test timeout.
#pragma once

#include <sstream>
#include <string>

namespace image_harness {

using TestFn = void (*)();

struct Registrar {
  Registrar(const char* name, TestFn fn);
};

struct Abort {};  // thrown by REQUIRE: ends the current case

void fail(const char* file, int line, const std::string& what);

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace image_harness

#define FERRY_IMAGE_TEST(name)                                                        \
  static void ferry_image_test_##name();                                              \
  static const ::image_harness::Registrar ferry_image_registrar_##name(               \
      #name, &ferry_image_test_##name);                                               \
  static void ferry_image_test_##name()

// EXPECT(cond, optional message parts...): records a failure and goes on.
#define EXPECT(cond, ...)                                                             \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ::image_harness::fail(__FILE__, __LINE__,                                       \
                            ::image_harness::str(#cond, " ", ##__VA_ARGS__));         \
    }                                                                                 \
  } while (0)

// REQUIRE(cond, ...): records a failure and ends the case.
#define REQUIRE(cond, ...)                                                            \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ::image_harness::fail(__FILE__, __LINE__,                                       \
                            ::image_harness::str(#cond, " ", ##__VA_ARGS__));         \
      throw ::image_harness::Abort{};                                                 \
    }                                                                                 \
  } while (0)
