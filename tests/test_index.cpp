// embedding, index_select, gather, scatter_add: hand-computed cases, naive references, gradchecks
// on non-contiguous inputs, thread-count determinism and error messages.
#include <doctest/doctest.h>

#include <functional>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/threads.h"
#include "op_test_helpers.h"

using namespace liandan;
using namespace liandan::testing;

namespace {

Tensor idx(std::vector<int64_t> v, const Shape& s) { return from_vector(v, s); }
Tensor idx(std::vector<int64_t> v) {
  int64_t n = int64_t(v.size());
  return from_vector(v, {n});
}
Tensor f64(std::vector<double> v, const Shape& s) { return from_vector(v, s, DType::f64); }

// Calls fn(index) for every multi-index of `shape` in row-major order.
void for_each_index(const Shape& shape, const std::function<void(const Shape&)>& fn) {
  int64_t n = shape_numel(shape);
  Shape i(shape.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    fn(i);
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      if (++i[size_t(d)] < shape[size_t(d)]) break;
      i[size_t(d)] = 0;
    }
  }
}

Tensor gather_ref(const Tensor& x, int64_t d, const Tensor& index) {
  Tensor out = zeros(index.shape(), DType::f64);
  for_each_index(index.shape(), [&](const Shape& i) {
    Shape xi = i;
    xi[size_t(d)] = int64_t(index.at(i));
    out.set(i, x.at(xi));
  });
  return out;
}

Tensor scatter_add_ref(const Tensor& x, int64_t d, const Tensor& index, const Tensor& src) {
  Tensor out = x.detach().clone();
  for_each_index(index.shape(), [&](const Shape& i) {
    Shape oi = i;
    oi[size_t(d)] = int64_t(index.at(i));
    out.set(oi, out.at(oi) + src.at(i));
  });
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------- embedding

TEST_CASE("embedding rows equal the weight rows (2-D indices, repeats)") {
  Generator gen(1);
  Tensor w = randn({7, 4}, gen, DType::f64);
  Tensor ind = idx({3, 0, 6, 3, 3, 1}, {2, 3});
  Tensor e = embedding(w, ind);
  REQUIRE(e.shape() == Shape{2, 3, 4});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) CHECK(e.at({i, j, k}) == w.at({int64_t(ind.at({i, j})), k}));
  // 1-D and 0-D indices
  CHECK(embedding(w, idx({5})).shape() == Shape{1, 4});
  Tensor e0 = embedding(w, from_vector(std::vector<int64_t>{2}, {}));
  REQUIRE(e0.shape() == Shape{4});
  CHECK(max_abs_diff(e0, w.select(0, 2)) == 0.0);
  // f32 weight and a non-contiguous (transposed) weight
  Tensor wt = randn({4, 7}, gen, DType::f32).t();
  Tensor et = embedding(wt, ind);
  CHECK(et.dtype() == DType::f32);
  CHECK(max_abs_diff(et.select(0, 1).select(0, 2), wt.select(0, 1)) == 0.0);
}

TEST_CASE("embedding backward accumulates repeated indices") {
  Generator gen(2);
  Tensor w = rnd({5, 3}, gen);
  Tensor ind = idx({4, 1, 4, 4, 0}, {5});
  embedding(w, ind).backward(ones({5, 3}, DType::f64));
  std::vector<double> count = {1, 1, 0, 0, 3};
  for (int64_t v = 0; v < 5; ++v)
    for (int64_t k = 0; k < 3; ++k) CHECK(w.grad().at({v, k}) == count[size_t(v)]);
}

TEST_CASE("embedding gradcheck: contiguous and non-contiguous weight, 2-D indices with repeats") {
  Generator gen(3);
  Tensor ind = idx({2, 0, 2, 5, 5, 5, 1, 3}, {2, 4});
  for (auto& [name, w] : layouts({6, 3}, gen)) {
    CAPTURE(name);
    LD_GRADCHECK([ind](const std::vector<Tensor>& in) { return embedding(in[0], ind); }, {w});
  }
  Tensor rind = randint(0, 6, {3, 5}, gen);
  LD_GRADCHECK([rind](const std::vector<Tensor>& in) { return embedding(in[0], rind); }, {rnd_transposed({6, 3}, gen)});
}

TEST_CASE("index_select / embedding backward survive the index tensor being freed") {
  // The index is a temporary: backward must not read its freed (and reused) storage.
  Generator gen(4);
  Tensor w = rnd({6, 3}, gen);
  Tensor y, e;
  {
    Tensor i1 = idx({0, 5, 5, 2}), i2 = idx({1, 1, 4, 2});
    y = index_select(w, 0, i1);
    e = embedding(w, i2);
  }
  std::vector<Tensor> junk;
  for (int k = 0; k < 16; ++k) junk.push_back(full({4}, 3.0, DType::i64));  // reuse freed blocks
  (sum(y) + sum(e) * 10.0).backward();
  std::vector<double> expect = {1, 20, 11, 0, 10, 2};
  for (int64_t v = 0; v < 6; ++v)
    for (int64_t k = 0; k < 3; ++k) CHECK(w.grad().at({v, k}) == expect[size_t(v)]);
}

// ------------------------------------------------------------------------------- index_select

TEST_CASE("index_select: hand-computed values along dims 0, 1 and -1") {
  Tensor x = f64({0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23}, {3, 4});
  Tensor a = index_select(x, 0, idx({2, 0, 2}));
  CHECK(a.shape() == Shape{3, 4});
  CHECK(a.to_vector() == std::vector<double>{20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23});
  Tensor b = index_select(x, 1, idx({3, 1}));
  CHECK(b.shape() == Shape{3, 2});
  CHECK(b.to_vector() == std::vector<double>{3, 1, 13, 11, 23, 21});
  CHECK(index_select(x, -1, idx({3, 1})).to_vector() == b.to_vector());
  // non-contiguous input: x.t() is [4, 3]
  CHECK(index_select(x.t(), 1, idx({1})).to_vector() == std::vector<double>{10, 11, 12, 13});
  // 0-D index keeps the dim with size 1; empty index gives size 0
  CHECK(index_select(x, 1, from_vector(std::vector<int64_t>{2}, {})).shape() == Shape{3, 1});
  CHECK(index_select(x, 0, idx({})).shape() == Shape{0, 4});
}

TEST_CASE("index_select gradcheck: dims 0, 1, 2 on non-contiguous inputs with repeated indices") {
  Generator gen(5);
  Shape s{3, 4, 5};
  for (auto& [name, x] : layouts(s, gen)) {
    for (int64_t d : {0, 1, 2, -1}) {
      CAPTURE(name);
      CAPTURE(d);
      int64_t n = s[size_t(d < 0 ? d + 3 : d)];
      Tensor ind = idx({n - 1, 0, n - 1, 1});
      LD_GRADCHECK([d, ind](const std::vector<Tensor>& in) { return index_select(in[0], d, ind); }, {x});
    }
  }
}

// ------------------------------------------------------------------------------- gather

TEST_CASE("gather: hand-computed cases") {
  Tensor x = f64({1, 2, 3, 4}, {2, 2});
  CHECK(gather(x, 1, idx({0, 0, 1, 0}, {2, 2})).to_vector() == std::vector<double>{1, 1, 4, 3});
  CHECK(gather(x, 0, idx({1, 0, 0, 0}, {2, 2})).to_vector() == std::vector<double>{3, 2, 1, 2});
  Tensor y = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  // index smaller than the input along the other dim, longer along the gathered one
  Tensor g0 = gather(y, 0, idx({1, 0, 1, 1, 1, 0, 0, 1}, {4, 2}));
  CHECK(g0.shape() == Shape{4, 2});
  CHECK(g0.to_vector() == std::vector<double>{4, 2, 4, 5, 4, 2, 1, 5});
  CHECK(gather(y, 1, idx({2}, {1, 1})).to_vector() == std::vector<double>{3});
  // non-contiguous input and non-contiguous (transposed) index
  Tensor it = idx({0, 1, 2, 2, 1, 0}, {3, 2}).t();  // [[0, 2, 1], [1, 2, 0]]
  CHECK(gather(y, 1, it).to_vector() == std::vector<double>{1, 3, 2, 5, 6, 4});
  CHECK(gather(y.t(), 0, idx({1, 0}, {1, 2})).to_vector() == std::vector<double>{2, 4});
}

TEST_CASE("gather matches a naive loop on random 3-D cases") {
  Generator gen(6);
  Tensor x = randn({3, 4, 5}, gen, DType::f64).permute({2, 0, 1});  // [5, 3, 4], non-contiguous
  for (int64_t d = 0; d < 3; ++d) {
    Shape is = {4, 2, 3};
    is[size_t(d)] = 6;
    Tensor ind = randint(0, x.shape()[size_t(d)], is, gen);
    CHECK(max_abs_diff(gather(x, d, ind), gather_ref(x, d, ind)) == 0.0);
  }
}

TEST_CASE("gather gradcheck: each dim, non-contiguous inputs, repeated indices") {
  Generator gen(7);
  Shape s{3, 4, 5};
  for (auto& [name, x] : layouts(s, gen)) {
    for (int64_t d = 0; d < 3; ++d) {
      CAPTURE(name);
      CAPTURE(d);
      Shape is = {2, 3, 4};
      is[size_t(d)] = 7;  // more picks than rows: guaranteed repeats
      Tensor ind = randint(0, s[size_t(d)], is, gen);
      LD_GRADCHECK([d, ind](const std::vector<Tensor>& in) { return gather(in[0], d, ind); }, {x});
    }
  }
}

// ------------------------------------------------------------------------------- scatter_add

TEST_CASE("scatter_add: hand-computed cases; the input is not modified") {
  Tensor x = f64({10, 20, 30}, {3});
  Tensor out = scatter_add(x, 0, idx({0, 1, 0, 2, 0}), f64({1, 2, 3, 4, 5}, {5}));
  CHECK(out.to_vector() == std::vector<double>{19, 22, 34});
  CHECK(x.to_vector() == std::vector<double>{10, 20, 30});
  Tensor z = zeros({2, 3}, DType::f64);
  Tensor src = f64({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(scatter_add(z, 0, idx({0, 1, 0, 1, 0, 0}, {2, 3}), src).to_vector() ==
        std::vector<double>{1, 5, 9, 4, 2, 0});
  CHECK(scatter_add(z, 1, idx({2, 2, 0, 1, 1, 1}, {2, 3}), src).to_vector() ==
        std::vector<double>{3, 0, 3, 0, 15, 0});
  // index smaller than src: src elements outside the index are ignored
  Tensor big = f64({1, 2, 3, 100, 4, 5, 6, 100, 100, 100, 100, 100}, {3, 4});
  CHECK(scatter_add(z, 1, idx({0, 0, 2, 1, 1, 1}, {2, 3}), big).to_vector() ==
        std::vector<double>{3, 0, 3, 0, 15, 0});
}

TEST_CASE("scatter_add matches a naive loop on random 3-D cases with non-contiguous operands") {
  Generator gen(8);
  Tensor x = randn({5, 4, 3}, gen, DType::f64).t();                     // [5, 3, 4]
  Tensor src = randn({4, 6, 5}, gen, DType::f64).permute({2, 0, 1});    // [5, 4, 6]
  for (int64_t d = 0; d < 3; ++d) {
    Shape is = {4, 2, 3};
    is[size_t(d)] = 4;
    Tensor ind = randint(0, x.shape()[size_t(d)], is, gen);
    CHECK(max_abs_diff(scatter_add(x, d, ind, src), scatter_add_ref(x, d, ind, src)) < 1e-14);
  }
}

TEST_CASE("scatter_add gradcheck: index smaller than src, non-contiguous x and src") {
  Generator gen(9);
  // dim 0: x [4, 5], src [3, 6], index [3, 4]
  Tensor i0 = randint(0, 4, {3, 4}, gen);
  for (auto& [name, x] : layouts({4, 5}, gen)) {
    CAPTURE(name);
    for (Tensor src : {rnd({3, 6}, gen), rnd_transposed({3, 6}, gen), rnd_strided({3, 6}, gen)}) {
      LD_GRADCHECK([i0](const std::vector<Tensor>& in) { return scatter_add(in[0], 0, i0, in[1]); }, {x, src});
    }
  }
  // dim 1 and dim -1 on 3-D tensors; src only / x only requiring grad
  Tensor x3 = rnd_permuted({2, 5, 3}, gen), s3 = rnd_permuted({3, 4, 4}, gen);
  Tensor i1 = randint(0, 5, {2, 4, 3}, gen), i2 = randint(0, 3, {2, 4, 4}, gen);
  LD_GRADCHECK([i1](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, i1, in[1]); }, {x3, s3});
  LD_GRADCHECK([i2](const std::vector<Tensor>& in) { return scatter_add(in[0], -1, i2, in[1]); }, {x3, s3});
  Tensor xn = randn({2, 5, 3}, gen, DType::f64);
  LD_GRADCHECK([i1](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, i1, in[1]); }, {xn, s3});
  Tensor sn = randn({3, 4, 4}, gen, DType::f64);
  LD_GRADCHECK([i1](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, i1, in[1]); }, {x3, sn});
}

// ------------------------------------------------------------------------------- determinism

TEST_CASE("scatter_add and index_select/gather backward are bit-identical on 1 and 2 threads") {
  Generator gen(10);
  Tensor x = randn({8, 4096}, gen, DType::f32), src = randn({64, 4096}, gen, DType::f32);
  Tensor ind = randint(0, 8, {64, 4096}, gen), rows = randint(0, 8, {64}, gen);
  Tensor g = randn({64, 4096}, gen, DType::f32);
  auto run = [&](int threads) {
    ThreadsGuard tg(threads);
    Tensor xl = leaf(x.clone()), sl = leaf(src.clone());
    std::vector<std::vector<double>> r;
    r.push_back(scatter_add(x, 0, ind, src).to_vector());
    index_select(xl, 0, rows).backward(g);
    r.push_back(xl.grad().to_vector());
    xl.set_grad(Tensor());
    gather(xl, 0, ind).backward(g);
    r.push_back(xl.grad().to_vector());
    scatter_add(xl, 0, ind, sl).backward(zeros({8, 4096}, DType::f32) + 1.5f);
    r.push_back(sl.grad().to_vector());
    return r;
  };
  auto r1 = run(1), r2 = run(2);
  CHECK(get_num_threads() == 2);
  REQUIRE(r1.size() == r2.size());
  for (size_t k = 0; k < r1.size(); ++k) {
    CAPTURE(k);
    CHECK(r1[k] == r2[k]);
  }
}

// ------------------------------------------------------------------------------- errors

TEST_CASE("indexing errors name the op, the index and the shapes") {
  Tensor w = zeros({5, 3}, DType::f64);
  CHECK_THROWS_WITH_AS(embedding(w, idx({0, 5})), doctest::Contains("embedding"), liandan::Error);
  CHECK_THROWS_WITH_AS(embedding(w, idx({0, 5})), doctest::Contains("index 5"), liandan::Error);
  CHECK_THROWS_WITH_AS(embedding(w, idx({-1})), doctest::Contains("index -1"), liandan::Error);
  CHECK_THROWS_WITH_AS(embedding(zeros({5}, DType::f64), idx({0})), doctest::Contains("embedding"), liandan::Error);
  CHECK_THROWS_WITH_AS(embedding(w, zeros({2}, DType::f64)), doctest::Contains("i64"), liandan::Error);

  CHECK_THROWS_WITH_AS(index_select(w, 1, idx({3})), doctest::Contains("index_select: index 3"), liandan::Error);
  CHECK_THROWS_WITH_AS(index_select(w, 0, idx({0, 1}, {1, 2})), doctest::Contains("index_select"), liandan::Error);
  CHECK_THROWS_WITH_AS(index_select(w, 2, idx({0})), doctest::Contains("index_select"), liandan::Error);

  CHECK_THROWS_WITH_AS(gather(w, 1, idx({0, 1})), doctest::Contains("gather"), liandan::Error);
  CHECK_THROWS_WITH_AS(gather(w, 1, idx({0, 1})), doctest::Contains("[5, 3]"), liandan::Error);
  CHECK_THROWS_WITH_AS(gather(w, 1, idx({0, 3}, {1, 2})), doctest::Contains("gather: index 3"), liandan::Error);
  CHECK_THROWS_WITH_AS(gather(w, 1, idx(std::vector<int64_t>(12, 0), {6, 2})), doctest::Contains("[6, 2]"),
                       liandan::Error);

  CHECK_THROWS_WITH_AS(scatter_add(w, 0, idx({0}, {1, 1}), zeros({1, 1}, DType::f32)),
                       doctest::Contains("scatter_add"), liandan::Error);
  CHECK_THROWS_WITH_AS(scatter_add(w, 0, idx({0}, {1, 1}), zeros({1}, DType::f64)), doctest::Contains("[1]"),
                       liandan::Error);
  CHECK_THROWS_WITH_AS(scatter_add(w, 0, idx({5}, {1, 1}), zeros({1, 1}, DType::f64)),
                       doctest::Contains("scatter_add: index 5"), liandan::Error);
  CHECK_THROWS_WITH_AS(scatter_add(w, 0, idx({0, 0}, {2, 1}), zeros({1, 1}, DType::f64)),
                       doctest::Contains("src shape [1, 1]"), liandan::Error);
}
