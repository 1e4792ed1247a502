// matmul (core/ops/matmul.cpp), torch.matmul semantics on OpenBLAS:
//   - values against a naive triple loop (with 1-D promotion and batch broadcasting written out)
//     for 2-D, 1-D, batched, broadcast-batch, folded-Linear, transposed (BLAS trans flag),
//     padded (ld > cols), strided (copied) and expanded (stride-0 batch) operands;
//   - f64 gradcheck of the same cases;
//   - f32 against f64, zero-size dims, thread-count independence, error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/cpu/blas.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;

using liandan::testing::for_each_index;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
using Pre = std::function<Tensor(const Tensor&)>;

Generator& gen() {
  static Generator g(42);
  return g;
}

Tensor rnd(const Shape& s) { return randn(s, gen(), DType::f64); }

Tensor leaf(Tensor t) {
  t.requires_grad_();
  return t;
}
// transpose(-1, -2) view of a contiguous [.., b, a] tensor: logical shape [.., a, b]
Tensor transposed(const Shape& s) {
  Shape st = s;
  std::swap(st[st.size() - 2], st[st.size() - 1]);
  return rnd(st).transpose(-1, -2);
}
// every other column: inner stride 2, which BLAS cannot take (copied)
Tensor strided(const Shape& s) {
  Shape st = s;
  st.back() *= 2;
  return rnd(st).slice(-1, 0, st.back(), 2);
}
// the first s[-1] columns of a wider matrix: unit inner stride, leading dimension > cols
Tensor padded(const Shape& s) {
  Shape st = s;
  st.back() += 3;
  return rnd(st).narrow(-1, 0, s.back());
}

// torch.matmul by a naive triple loop in double, reading the operands element by element.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b, Shape& out_shape) {
  bool va = a.dim() == 1, vb = b.dim() == 1;
  int64_t M = va ? 1 : a.size(-2), K = a.size(-1), N = vb ? 1 : b.size(-1);
  REQUIRE((vb ? b.size(0) : b.size(-2)) == K);
  Shape ba = va ? Shape{} : Shape(a.shape().begin(), a.shape().end() - 2);
  Shape bb = vb ? Shape{} : Shape(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "ref");
  out_shape = batch;
  if (!va) out_shape.push_back(M);
  if (!vb) out_shape.push_back(N);
  std::vector<double> out;
  auto pick = [](const Shape& bs, const Shape& bi) {  // batch index of an operand with batch shape bs
    Shape r(bs.size());
    size_t lead = bi.size() - bs.size();
    for (size_t d = 0; d < bs.size(); ++d) r[d] = bs[d] == 1 ? 0 : bi[lead + d];
    return r;
  };
  for_each_index(batch, [&](const Shape& bi) {
    Shape ia = pick(ba, bi), ib = pick(bb, bi);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          Shape ja = ia, jb = ib;
          if (!va) ja.push_back(m);
          ja.push_back(k);
          jb.push_back(k);
          if (!vb) jb.push_back(n);
          s += a.at(ja) * b.at(jb);
        }
        out.push_back(s);
      }
  });
  return out;
}

void check_matmul_values(const Tensor& a, const Tensor& b, double tol) {
  Tensor c = matmul(a, b);
  Shape want_shape;
  std::vector<double> want = ref_matmul(a, b, want_shape);
  REQUIRE(c.shape() == want_shape);
  CHECK(c.dtype() == a.dtype());
  std::vector<double> got = c.to_vector();
  REQUIRE(got.size() == want.size());
  int64_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i]))) && bad++ == 0)
      first = "element " + std::to_string(i) + ": " + std::to_string(got[i]) + " vs " + std::to_string(want[i]);
  INFO(first);
  CHECK(bad == 0);
}

struct Case {
  std::string name;
  Tensor a, b;
  Pre pre_a = nullptr, pre_b = nullptr;  // applied inside f (e.g. expand)
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"2-D [3,4]@[4,5]", rnd({3, 4}), rnd({4, 5})});
  c.push_back({"vector@matrix [4]@[4,5]", rnd({4}), rnd({4, 5})});
  c.push_back({"matrix@vector [3,4]@[4]", rnd({3, 4}), rnd({4})});
  c.push_back({"vector@vector [4]@[4]", rnd({4}), rnd({4})});
  c.push_back({"batched [2,3,4]@[2,4,5]", rnd({2, 3, 4}), rnd({2, 4, 5})});
  c.push_back({"broadcast batch [2,1,3,4]@[5,4,2]", rnd({2, 1, 3, 4}), rnd({5, 4, 2})});
  c.push_back({"broadcast batch [3,4]@[2,4,5]", rnd({3, 4}), rnd({2, 4, 5})});
  c.push_back({"broadcast batch [1,3,4]@[2,2,4,3]", rnd({1, 3, 4}), rnd({2, 2, 4, 3})});
  c.push_back({"Linear [2,3,4]@[4,5]", rnd({2, 3, 4}), rnd({4, 5})});
  c.push_back({"Linear 4-D [2,2,3,4]@[4,5]", rnd({2, 2, 3, 4}), rnd({4, 5})});
  c.push_back({"Linear, transposed W [2,3,4]@[5,4]^T", rnd({2, 3, 4}), transposed({4, 5})});
  c.push_back({"Linear, non-contiguous x", rnd({3, 2, 4}).transpose(0, 1), rnd({4, 5})});
  c.push_back({"Linear, strided x and padded W", strided({2, 3, 4}), padded({4, 5})});
  c.push_back({"batched@vector [2,3,4]@[4]", rnd({2, 3, 4}), rnd({4})});
  c.push_back({"vector@batched [4]@[2,4,5]", rnd({4}), rnd({2, 4, 5})});
  c.push_back({"transposed A", transposed({3, 4}), rnd({4, 5})});
  c.push_back({"transposed B", rnd({3, 4}), transposed({4, 5})});
  c.push_back({"both transposed", transposed({3, 4}), transposed({4, 5})});
  c.push_back({"batched, both transposed", transposed({2, 3, 4}), transposed({2, 4, 5})});
  c.push_back({"padded A, padded B (ld > cols)", padded({3, 4}), padded({4, 5})});
  c.push_back({"transposed padded A (ld > rows)", padded({4, 3}).t(), rnd({4, 5})});
  c.push_back({"strided A and B (copied)", strided({3, 4}), strided({4, 5})});
  c.push_back({"permuted batch dims (non-uniform batch stride)", rnd({3, 2, 3, 4}).transpose(0, 1),
               rnd({2, 3, 4, 2})});
  c.push_back({"batch dims over a transposed matrix", rnd({2, 4, 3}).permute({0, 2, 1}), rnd({4, 2})});
  c.push_back({"row vector [1,4]@[4,5]", rnd({1, 4}), rnd({4, 5})});
  c.push_back({"column output [3,4]@[4,1]", rnd({3, 4}), rnd({4, 1})});
  c.push_back({"transposed row [1,4] (strides [1,*])", rnd({4, 1}).t(), transposed({4, 5})});
  c.push_back({"transposed vector as a matrix [3,1]", rnd({1, 3}).t(), rnd({1, 2})});
  c.push_back({"expanded batch [1,3,4]->[5,3,4] @ [5,4,2]", rnd({1, 3, 4}), rnd({5, 4, 2}),
               [](const Tensor& t) { return t.expand({5, 3, 4}); }, nullptr});
  c.push_back({"expanded matrix rows [1,4]->[3,4] @ [4,2]", rnd({1, 4}), rnd({4, 2}),
               [](const Tensor& t) { return t.expand({3, 4}); }, nullptr});
  c.push_back({"expanded B batch [4,2]->[3,4,2]", rnd({3, 3, 4}), rnd({4, 2}), nullptr,
               [](const Tensor& t) { return t.expand({3, 4, 2}); }});
  return c;
}

Tensor with_pre(const Pre& p, const Tensor& t) { return p ? p(t) : t; }

// Runs with `n` threads for a scope, then restores 2 (the test default), even if an assertion throws.
struct ThreadCount {
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(2); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

}  // namespace

TEST_CASE("matmul: values against a naive triple loop (f64 and f32)") {
  for (const Case& c : cases()) {
    INFO("case ", c.name);
    std::vector<double> a_before = c.a.to_vector(), b_before = c.b.to_vector();
    Tensor a = with_pre(c.pre_a, c.a), b = with_pre(c.pre_b, c.b);
    check_matmul_values(a, b, 1e-12);
    Tensor a32 = with_pre(c.pre_a, c.a.to(DType::f32)), b32 = with_pre(c.pre_b, c.b.to(DType::f32));
    check_matmul_values(a32, b32, 1e-5);
    // the inputs are left untouched
    CHECK(c.a.to_vector() == a_before);
    CHECK(c.b.to_vector() == b_before);
  }
}

TEST_CASE("matmul: gradcheck (f64) for every case") {
  for (const Case& c : cases()) {
    INFO("case ", c.name);
    Tensor a = leaf(c.a.detach()), b = leaf(c.b.detach());
    Pre pa = c.pre_a, pb = c.pre_b;
    Fn f = [&](const std::vector<Tensor>& xs) { return matmul(with_pre(pa, xs[0]), with_pre(pb, xs[1])); };
    LD_GRADCHECK(f, {a, b});
    // only one operand requiring grad
    LD_GRADCHECK(f, {leaf(c.a.detach()), c.b.detach()});
    LD_GRADCHECK(f, {c.a.detach(), leaf(c.b.detach())});
  }
}

TEST_CASE("matmul: closed forms and the shapes of the 1-D cases") {
  Tensor a = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  Tensor b = from_vector(std::vector<double>{7, 8, 9, 10, 11, 12}, {3, 2}, DType::f64);
  // [[1,2,3],[4,5,6]] @ [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]
  CHECK(matmul(a, b).to_vector() == std::vector<double>{58, 64, 139, 154});
  CHECK(a.matmul(b).to_vector() == std::vector<double>{58, 64, 139, 154});
  CHECK(matmul(b.t(), a.t()).to_vector() == std::vector<double>{58, 139, 64, 154});
  Tensor v = from_vector(std::vector<double>{1, 2, 3}, {3}, DType::f64);
  Tensor vv = matmul(v, v);
  CHECK(vv.shape() == Shape{});
  CHECK(vv.item() == 14);
  CHECK(matmul(a, v).shape() == Shape{2});
  CHECK(matmul(a, v).to_vector() == std::vector<double>{14, 32});
  CHECK(matmul(v, b).shape() == Shape{2});
  CHECK(matmul(v, b).to_vector() == std::vector<double>{58, 64});
  // identity
  Tensor eye = zeros({3, 3}, DType::f64);
  for (int64_t i = 0; i < 3; ++i) eye.set({i, i}, 1.0);
  CHECK(matmul(b.t(), eye).to_vector() == b.t().contiguous().to_vector());
  // the gradient of sum(a @ b): da = 1 @ b^T (row sums of b), db = a^T @ 1 (column sums of a)
  Tensor ag = a.clone().requires_grad_(), bg = b.clone().requires_grad_();
  sum(matmul(ag, bg)).backward();
  CHECK(ag.grad().to_vector() == std::vector<double>{15, 19, 23, 15, 19, 23});
  CHECK(bg.grad().to_vector() == std::vector<double>{5, 5, 7, 7, 9, 9});
  // the vector@vector gradient
  Tensor u = v.clone().requires_grad_(), w = from_vector(std::vector<double>{4, 5, 6}, {3}, DType::f64).requires_grad_();
  matmul(u, w).backward();
  CHECK(u.grad().to_vector() == std::vector<double>{4, 5, 6});
  CHECK(w.grad().to_vector() == std::vector<double>{1, 2, 3});
}

TEST_CASE("matmul: zero-size dims") {
  for (DType dt : {DType::f64, DType::f32}) {
    Tensor c = matmul(ones({3, 0}, dt), ones({0, 4}, dt));  // K = 0: zeros
    CHECK(c.shape() == Shape{3, 4});
    CHECK(sum(abs(c)).item() == 0);
    CHECK(matmul(ones({0, 4}, dt), ones({4, 5}, dt)).shape() == Shape{0, 5});
    CHECK(matmul(ones({3, 4}, dt), ones({4, 0}, dt)).shape() == Shape{3, 0});
    CHECK(matmul(ones({0, 3, 4}, dt), ones({0, 4, 5}, dt)).shape() == Shape{0, 3, 5});
    CHECK(matmul(ones({2, 3, 0}, dt), ones({0, 5}, dt)).to_vector() == std::vector<double>(30, 0.0));
  }
  // gradients through K = 0 and through an empty batch have the operands' shapes
  struct Z {
    Shape a, b;
  };
  for (const Z& z : std::vector<Z>{{{3, 0}, {0, 4}}, {{2, 3, 0}, {0, 5}}, {{0, 3, 4}, {4, 5}}, {{2, 3, 0}, {2, 0, 5}},
                                   {{0, 4}, {4, 2}}}) {
    INFO("a ", shape_str(z.a), " b ", shape_str(z.b));
    Tensor a = full(z.a, 1.0, DType::f64).requires_grad_(), b = full(z.b, 1.0, DType::f64).requires_grad_();
    sum(matmul(a, b)).backward();
    CHECK(a.grad().shape() == z.a);
    CHECK(b.grad().shape() == z.b);
    CHECK(sum(abs(b.grad())).item() == 0);  // every output is an empty sum, or there are no outputs
  }
}

TEST_CASE("matmul: f32 agrees with f64, larger and multi-threaded sizes") {
  struct Big {
    Shape a, b;
    bool ta, tb;
  };
  for (const Big& s : std::vector<Big>{{{64, 128}, {128, 96}, false, false},
                                      {{64, 128}, {128, 96}, true, true},
                                      {{16, 32, 48}, {16, 48, 24}, false, true},   // many small: parallel batch
                                      {{4, 33, 65}, {65, 47}, false, false},       // folded Linear
                                      {{2, 300, 200}, {2, 200, 250}, true, false}}) {  // few large: threaded BLAS
    INFO("a ", shape_str(s.a), " b ", shape_str(s.b), " ta ", s.ta, " tb ", s.tb);
    Tensor a = s.ta ? transposed(s.a) : rnd(s.a), b = s.tb ? transposed(s.b) : rnd(s.b);
    Tensor c64 = matmul(a, b), c32 = matmul(a.to(DType::f32), b.to(DType::f32));
    // |c32 - c64| <= 1e-5 (|a| @ |b|): K <= 200 products at f32 precision
    Tensor bound = matmul(abs(a), abs(b));
    std::vector<double> u = c32.to_vector(), v = c64.to_vector(), w = bound.to_vector();
    int64_t bad = 0;
    for (size_t i = 0; i < u.size(); ++i)
      if (std::fabs(u[i] - v[i]) > 1e-5 * w[i]) ++bad;
    CHECK(bad == 0);
    // spot-check f64 against the naive loop on one batch row
    Shape want_shape;
    Tensor a1 = a.dim() == 3 ? a.select(0, 1) : a, b1 = b.dim() == 3 ? b.select(0, 1) : b;
    std::vector<double> want = ref_matmul(a1.narrow(0, 0, 3), b1, want_shape);
    std::vector<double> got = matmul(a1.narrow(0, 0, 3), b1).to_vector();
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
  }
}

TEST_CASE("matmul: results do not depend on the thread count (batch-parallel path)") {
  Generator g(3);
  Tensor a = randn({32, 16, 24}, g), b = randn({32, 24, 8}, g).transpose(-1, -2).contiguous().transpose(-1, -2);
  Tensor x = randn({8, 16, 24}, g), w = randn({24, 12}, g);
  Tensor c1, l1;
  {
    ThreadCount t(1);
    c1 = matmul(a, b);
    l1 = matmul(x, w);
  }
  REQUIRE(get_num_threads() == 2);
  Tensor c2 = matmul(a, b), l2 = matmul(x, w);
  CHECK(bit_equal(c1, c2));
  CHECK(bit_equal(l1, l2));
}

TEST_CASE("matmul: errors name the op and both shapes") {
  Tensor a = ones({3, 4}), b = ones({5, 6});
  CHECK_THROWS_WITH_AS(matmul(a, b), "matmul: shapes [3, 4] and [5, 6] cannot be multiplied (4 vs 5)",
                       liandan::Error);
  // the 1-D cases report the shapes the caller passed, not the promoted ones
  CHECK_THROWS_WITH_AS(matmul(ones({4}), ones({5})), "matmul: shapes [4] and [5] cannot be multiplied (4 vs 5)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(a, ones({5})), "matmul: shapes [3, 4] and [5] cannot be multiplied (4 vs 5)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({5}), a), "matmul: shapes [5] and [3, 4] cannot be multiplied (5 vs 3)",
                       liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({2, 3, 4}), ones({2, 5, 6})),
                       "matmul: shapes [2, 3, 4] and [2, 5, 6] cannot be multiplied (4 vs 5)", liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({2, 3, 4}), ones({3, 4, 5})), doctest::Contains("matmul"), liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({2, 3, 4}), ones({3, 4, 5})), doctest::Contains("[2] and [3]"), liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({3, 4}), ones({4, 5}, DType::f64)),
                       "matmul: dtype mismatch f32 [3, 4] vs f64 [4, 5]", liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(ones({}), ones({4})),
                       "matmul: both arguments need at least 1 dim, got [] and [4]", liandan::Error);
  Tensor i = ones({2, 2}).to(DType::i64);
  CHECK_THROWS_WITH_AS(matmul(i, i), doctest::Contains("matmul: expected a floating dtype"), liandan::Error);
  CHECK_THROWS_WITH_AS(matmul(Tensor(), a), doctest::Contains("matmul: undefined"), liandan::Error);
}

// cpu::gemm_columns (core/cpu/blas.h), the GEMM inside conv2d and the CPU attention: C in fixed blocks of 256
// columns, each one single-threaded BLAS call. Every transpose combination, ragged blocks (700 = 256 + 256 + 188),
// leading dims wider than the rows, alpha and beta: within f32 rounding of the f64 product, and bit-identical on
// 1, 2 and 3 threads (OpenBLAS's own threading is not, with some of its kernels).
TEST_CASE("cpu::gemm_columns: every transpose, ragged column blocks; bit-identical on any thread count") {
  const int64_t M = 24, N = 700, K = 144, pad = 3;
  Generator gen(41);
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    CAPTURE(ta);
    CAPTURE(tb);
    const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    auto floats = [&](int64_t n) {
      std::vector<double> v = randn({n}, gen).to_vector();
      return std::vector<float>(v.begin(), v.end());
    };
    std::vector<float> A = floats((ta ? K : M) * lda), B = floats((tb ? N : K) * ldb), C0 = floats(M * ldc);
    const float alpha = 0.5f, beta = 1.0f;
    auto run = [&](int threads) {
      testing::ThreadsGuard tg(threads);
      std::vector<float> C = C0;
      cpu::gemm_columns<float>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      return C;
    };
    std::vector<float> c1 = run(1), c2 = run(2), c3 = run(3);
    CHECK(c1 == c2);
    CHECK(c1 == c3);
    int64_t bad = 0;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double ref = beta * double(C0[i * ldc + j]), bound = std::fabs(ref);
        for (int64_t k = 0; k < K; ++k) {
          double a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
          ref += alpha * a * b;
          bound += std::fabs(alpha * a * b);
        }
        if (std::fabs(c2[i * ldc + j] - ref) > 1e-5 * bound) ++bad;
      }
    CHECK(bad == 0);
    for (int64_t i = 0; i < M; ++i)  // the padding columns are not written
      for (int64_t j = N; j < ldc; ++j) CHECK(c2[i * ldc + j] == C0[i * ldc + j]);
  }
}
