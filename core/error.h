#pragma once
// One exception type for every user-facing error in liandan. Messages name the op, the
// shapes/dtypes involved and what was expected, e.g.
//   "add: cannot broadcast shapes [2, 3] and [4] (dim -1: 3 vs 4)"
#include <sstream>
#include <stdexcept>
#include <string>

namespace liandan {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <class... Args>
std::string cat_message(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace liandan

// LD_CHECK(cond, "op: ", what, ...) throws liandan::Error with the concatenated message.
#define LD_CHECK(cond, ...)                                                   \
  do {                                                                        \
    if (!(cond)) throw ::liandan::Error(::liandan::detail::cat_message(__VA_ARGS__)); \
  } while (0)

#define LD_FAIL(...) throw ::liandan::Error(::liandan::detail::cat_message(__VA_ARGS__))
