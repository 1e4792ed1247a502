// Philox 4x32-10 and the generators built on it.
#include <doctest/doctest.h>

#include <cmath>

#include "core/ops.h"
#include "core/threads.h"

using namespace liandan;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors") {
  auto a = philox4x32_10({0, 0, 0, 0}, {0, 0});
  CHECK(a == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  auto b = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  CHECK(b == std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  auto c = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  CHECK(c == std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("same seed, same numbers; generator state advances") {
  Generator g1(5), g2(5);
  CHECK(rand({100}, g1).to_vector() == rand({100}, g2).to_vector());
  Generator g6(6);
  CHECK(rand({100}, g1).to_vector() != rand({100}, g6).to_vector());
  Generator g3(5);
  Tensor first = randn({10}, g3);
  Tensor second = randn({10}, g3);
  CHECK(first.to_vector() != second.to_vector());
  // restoring (seed, offset) replays the stream exactly: what a checkpoint relies on
  Generator g4(5);
  randn({10}, g4);
  uint64_t off = g4.offset();
  Tensor x = randn({33}, g4);
  g4.set_state(5, off);
  CHECK(randn({33}, g4).to_vector() == x.to_vector());
}

TEST_CASE("random numbers do not depend on the thread count") {
  set_num_threads(1);
  Generator a(9);
  Tensor one = randn({200000}, a);
  Tensor u1 = rand({200001}, a, DType::f64);
  set_num_threads(2);
  Generator b(9);
  Tensor two = randn({200000}, b);
  Tensor u2 = rand({200001}, b, DType::f64);
  CHECK(one.to_vector() == two.to_vector());
  CHECK(u1.to_vector() == u2.to_vector());
}

TEST_CASE("uniform and normal moments") {
  Generator g(1);
  const int64_t n = 1000000;
  Tensor u = rand({n}, g, DType::f64);
  double m = mean(u).item(), v = var(u).item();
  // standard errors: mean sqrt(1/12/n) ~ 2.9e-4, var ~ sqrt(1/180/n) ~ 7.5e-5; allow 5 sigma
  CHECK(std::fabs(m - 0.5) < 5 * 2.9e-4);
  CHECK(std::fabs(v - 1.0 / 12) < 5 * 7.5e-5);
  CHECK(max(u).item() < 1.0);
  CHECK(min(u).item() >= 0.0);
  Tensor z = randn({n}, g);
  CHECK(std::fabs(mean(z).item()) < 5e-3);          // 5 sigma = 5/sqrt(n)
  CHECK(std::fabs(var(z).item() - 1.0) < 7.1e-3);    // 5 sigma = 5 sqrt(2/n)
  // the 4th moment of N(0,1) is 3 (checks the shape, not just two moments)
  CHECK(std::fabs(mean(pow(z.to(DType::f64), 4.0)).item() - 3.0) < 0.05);
  // f32 and f64 normals come from the same uniforms
  Generator h1(3), h2(3);
  Tensor z32 = randn({1000}, h1, DType::f32), z64 = randn({1000}, h2, DType::f64);
  for (int64_t i = 0; i < 1000; ++i) CHECK(std::fabs(z32.at({i}) - z64.at({i})) < 1e-5 * (1 + std::fabs(z64.at({i}))));
}

TEST_CASE("randint and randperm") {
  Generator g(2);
  Tensor r = randint(3, 7, {10000}, g);
  CHECK(r.dtype() == DType::i64);
  CHECK(min(r.to(DType::f64)).item() == 3);
  CHECK(max(r.to(DType::f64)).item() == 6);
  Tensor p = randperm(50, g);
  std::vector<double> v = p.to_vector();
  std::sort(v.begin(), v.end());
  for (int i = 0; i < 50; ++i) CHECK(v[size_t(i)] == i);
  CHECK_THROWS_WITH_AS(randint(3, 3, {2}, g), doctest::Contains("randint"), Error);
}
