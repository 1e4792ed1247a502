// Tensor basics: creation, element access, views sharing storage, contiguous(), printing, errors.
#include <doctest/doctest.h>

#include <cmath>

#include "core/allocator.h"
#include "core/ops.h"

using namespace liandan;

TEST_CASE("creation: zeros, ones, full, arange, linspace, from_vector") {
  Tensor z = zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.dtype() == DType::f32);
  CHECK(z.numel() == 6);
  CHECK(z.strides() == Shape{3, 1});
  for (double v : z.to_vector()) CHECK(v == 0.0);
  for (double v : ones({4}, DType::f64).to_vector()) CHECK(v == 1.0);
  CHECK(full({2}, 3.5).at({1}) == 3.5);
  CHECK(arange(5).to_vector() == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(arange(1.0, 2.0, 0.25, DType::f64).to_vector() == std::vector<double>{1, 1.25, 1.5, 1.75});
  Tensor l = linspace(0, 1, 5, DType::f64);
  CHECK(l.to_vector() == std::vector<double>{0, 0.25, 0.5, 0.75, 1.0});
  CHECK(linspace(-3, 7, 11).at({10}) == 7.0);  // the end point is exact
  Tensor v = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  CHECK(v.at({1, 2}) == 6.0);
  CHECK(v.at({-1, -1}) == 6.0);
  CHECK(scalar_tensor(2.5).item() == 2.5);
  CHECK(scalar_tensor(2.5).dim() == 0);
  CHECK(from_vector(std::vector<int64_t>{7, 8}, {2}).dtype() == DType::i64);
}

TEST_CASE("item and element access errors") {
  CHECK_THROWS_WITH_AS(zeros({2}).item(), doctest::Contains("[2]"), Error);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).at({2, 0}), doctest::Contains("out of range"), Error);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).at({0}), doctest::Contains("[2, 3]"), Error);
  CHECK_THROWS_WITH_AS(from_vector(std::vector<double>{1, 2, 3}, {2, 2}), doctest::Contains("[2, 2]"), Error);
  CHECK_THROWS_WITH_AS(zeros({2}).data_ptr<double>(), doctest::Contains("f32"), Error);
}

TEST_CASE("views share storage") {
  Tensor a = arange(0.0, 12.0, 1.0, DType::f64).reshape({3, 4});
  Tensor t = a.t();
  CHECK(t.shape() == Shape{4, 3});
  CHECK(!t.is_contiguous());
  CHECK(t.at({3, 2}) == a.at({2, 3}));
  t.set({1, 2}, 100.0);
  CHECK(a.at({2, 1}) == 100.0);  // written through the view

  Tensor n = a.narrow(1, 1, 2);
  CHECK(n.shape() == Shape{3, 2});
  CHECK(n.at({0, 0}) == 1.0);
  CHECK(n.impl()->storage == a.impl()->storage);

  Tensor s = a.slice(1, 0, 4, 2);
  CHECK(s.to_vector() == std::vector<double>{0, 2, 4, 6, 8, 10});

  Tensor e = from_vector(std::vector<double>{1, 2, 3}, {3, 1}, DType::f64).expand({3, 4});
  CHECK(e.strides()[1] == 0);
  CHECK(e.at({2, 3}) == 3.0);

  Tensor u = a.unsqueeze(0);
  CHECK(u.shape() == Shape{1, 3, 4});
  CHECK(u.squeeze(0).shape() == Shape{3, 4});
  CHECK(a.reshape({-1}).shape() == Shape{12});
  CHECK(a.flatten().shape() == Shape{12});
  CHECK(a.permute({1, 0}).shape() == Shape{4, 3});
  CHECK(a.select(0, 1).to_vector() == std::vector<double>{4, 5, 6, 7});
}

TEST_CASE("contiguous copies only when needed") {
  Tensor a = randn({3, 4});
  CHECK(a.contiguous().same(a));
  Tensor t = a.t();
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.impl()->storage != a.impl()->storage);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j) CHECK(c.at({i, j}) == a.at({j, i}));
  // reshape of a non-contiguous view copies; view refuses with a clear error
  CHECK(t.reshape({12}).numel() == 12);
  CHECK_THROWS_WITH_AS(t.view({12}), doctest::Contains("not contiguous"), Error);
}

TEST_CASE("dtype conversion and clone") {
  Tensor a = from_vector(std::vector<double>{1.5, -2.25}, {2}, DType::f64);
  Tensor f = a.to(DType::f32);
  CHECK(f.dtype() == DType::f32);
  CHECK(f.at({1}) == -2.25);
  Tensor c = a.clone();
  c.set({0}, 9.0);
  CHECK(a.at({0}) == 1.5);
}

TEST_CASE("in-place ops bump the version and honour broadcasting") {
  Tensor a = zeros({2, 3}, DType::f64);
  uint64_t v0 = a.version();
  a.add_(from_vector(std::vector<double>{1, 2, 3}, {3}, DType::f64), 2.0);
  CHECK(a.version() > v0);
  CHECK(a.to_vector() == std::vector<double>{2, 4, 6, 2, 4, 6});
  a.mul_(0.5);
  CHECK(a.at({1, 2}) == 3.0);
  a.t().fill_(7.0);
  CHECK(a.at({0, 0}) == 7.0);
  a.copy_(scalar_tensor(1.0, DType::f64));
  CHECK(a.to_vector() == std::vector<double>(6, 1.0));
  CHECK_THROWS_WITH_AS(a.copy_(zeros({4}, DType::f64)), doctest::Contains("broadcast"), Error);
}

TEST_CASE("printing") {
  Tensor a = from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, DType::f64);
  std::string s = a.str();
  CHECK(s.find("[[1, 2],") != std::string::npos);
  CHECK(s.find("shape=[2, 2]") != std::string::npos);
  CHECK(s.find("dtype=f64") != std::string::npos);
  CHECK(zeros({100}).str().find("...") != std::string::npos);
}

TEST_CASE("shape errors name the op and the shapes") {
  CHECK_THROWS_WITH_AS(zeros({2, 3}).reshape({4, 2}), doctest::Contains("[4, 2]"), Error);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).permute({0, 0}), doctest::Contains("permute"), Error);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).transpose(0, 2), doctest::Contains("dim 2 out of range"), Error);
  CHECK_THROWS_WITH_AS(zeros({2, 3}).expand({4, 3}), doctest::Contains("expand"), Error);
  CHECK_THROWS_WITH_AS(zeros({-1}), doctest::Contains("negative"), Error);
  CHECK_THROWS_WITH_AS(zeros({1ll << 40, 1ll << 30}), doctest::Contains("overflow"), Error);
}

TEST_CASE("empty tensors") {
  Tensor e = zeros({0, 3});
  CHECK(e.numel() == 0);
  CHECK(sum(e).item() == 0.0);
  CHECK(add(e, ones({3})).shape() == Shape{0, 3});
  CHECK(matmul(zeros({2, 0}), zeros({0, 3})).to_vector() == std::vector<double>(6, 0.0));
  CHECK_THROWS_WITH_AS(max(e), doctest::Contains("empty"), Error);
}

TEST_CASE("huge allocations fail with an error, not a crash") {
  // 2^44 floats = 64 TiB: the allocator must refuse and name the request.
  CHECK_THROWS_WITH_AS(empty({1ll << 44}), doctest::Contains("out of memory"), Error);
  Tensor still_fine = ones({4});
  CHECK(sum(still_fine).item() == 4.0);
}

TEST_CASE("caching allocator reuses freed blocks and tracks statistics") {
  cpu_empty_cache();
  auto s0 = cpu_allocator_stats();
  {
    Tensor a = empty({1 << 20});
    auto s1 = cpu_allocator_stats();
    CHECK(s1.current >= s0.current + (4u << 20));
    CHECK(s1.peak >= s1.current);
  }
  auto s2 = cpu_allocator_stats();
  CHECK(s2.current == s0.current);
  CHECK(s2.cached >= (4u << 20));
  uint64_t os_before = s2.n_os_alloc;
  { Tensor b = empty({1 << 20}); }
  CHECK(cpu_allocator_stats().n_os_alloc == os_before);  // served from the cache
  cpu_empty_cache();
  CHECK(cpu_allocator_stats().cached == 0);
  CHECK(cpu_bin_size(1) == 64);
  CHECK(cpu_bin_size(5000) >= 5000);
  CHECK(cpu_bin_size(5000) <= 5000 * 5 / 4 + 64);
}
