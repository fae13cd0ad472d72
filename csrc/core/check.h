// Error reporting for the core: one exception type carrying the source location.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace ferry {

// Thrown by FERRY_CHECK; the bindings translate it to RuntimeError (or a more precise
// Python type where the message is about bad arguments).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
[[noreturn]] void fail(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  if (cond != nullptr) {
    os << " [" << cond << " failed at " << file << ":" << line << "]";
  } else {
    os << " [at " << file << ":" << line << "]";
  }
  throw Error(os.str());
}
}  // namespace detail

}  // namespace ferry

// FERRY_CHECK(cond, message parts...): throws ferry::Error naming the failed condition
// and where it is, so a report from a user points at the line.
#define FERRY_CHECK(cond, ...)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      ::ferry::detail::fail(__FILE__, __LINE__, #cond, ##__VA_ARGS__);         \
    }                                                                          \
  } while (0)

// FERRY_FAIL(message parts...): throws ferry::Error with the message and where it is.
#define FERRY_FAIL(...) ::ferry::detail::fail(__FILE__, __LINE__, nullptr, ##__VA_ARGS__)
