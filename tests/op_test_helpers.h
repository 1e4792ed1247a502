#pragma once
// Small helpers shared by the op test files.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"

namespace liandan::testing {

// gradcheck with the failure message attached to the assertion.
#define LD_GRADCHECK(...)                 \
  do {                                    \
    auto r_ = ::liandan::gradcheck(__VA_ARGS__); \
    INFO(r_.message);                     \
    CHECK(r_.ok);                         \
  } while (0)

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

inline Tensor leaf(Tensor t) {
  t.requires_grad_();
  return t;
}

// Contiguous f64 leaf that requires grad.
inline Tensor rnd(const Shape& s, Generator& g) { return leaf(randn(s, g, DType::f64)); }

// Non-contiguous f64 leaves of logical shape `s` (s.size() >= 2 for transposed/permuted).
inline Tensor rnd_transposed(const Shape& s, Generator& g) {
  Shape b = s;
  std::swap(b[b.size() - 1], b[b.size() - 2]);
  return leaf(randn(b, g, DType::f64).transpose(-1, -2));
}
inline Tensor rnd_strided(const Shape& s, Generator& g) {  // step-2 slice of the last dim
  Shape b = s;
  b.back() = 2 * b.back() + 1;
  return leaf(randn(b, g, DType::f64).slice(-1, 1, b.back(), 2));
}
inline Tensor rnd_permuted(const Shape& s, Generator& g) {  // base laid out with the dims reversed
  Shape b(s.rbegin(), s.rend()), p;
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) p.push_back(d);
  return leaf(randn(b, g, DType::f64).permute(p));
}

// The same logical shape in four layouts: contiguous, transposed, step-2 slice, permuted.
inline std::vector<std::pair<std::string, Tensor>> layouts(const Shape& s, Generator& g) {
  std::vector<std::pair<std::string, Tensor>> v;
  v.emplace_back("contiguous", rnd(s, g));
  if (s.size() >= 2) v.emplace_back("transposed", rnd_transposed(s, g));
  v.emplace_back("strided", rnd_strided(s, g));
  if (s.size() >= 3) v.emplace_back("permuted", rnd_permuted(s, g));
  return v;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

// The message of the liandan::Error that fn throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool same_storage(const Tensor& a, const Tensor& b) {
  return a.impl()->storage == b.impl()->storage;
}

// Sets the thread count for a scope and restores 2 (the test default) afterwards.
struct ThreadsGuard {
  explicit ThreadsGuard(int n) { set_num_threads(n); }
  ~ThreadsGuard() { set_num_threads(2); }
  ThreadsGuard(const ThreadsGuard&) = delete;
  ThreadsGuard& operator=(const ThreadsGuard&) = delete;
};

// Calls fn(index) for every index of shape `s` in row-major order.
inline void for_each_index(const Shape& s, const std::function<void(const Shape&)>& fn) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  Shape idx(s.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    fn(idx);
    for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace liandan::testing
