#pragma once
// Counter-based random numbers (Philox 4x32-10, Salmon et al. 2011). Element i of a draw is a
// pure function of (seed, offset, i), so the numbers do not depend on the thread count or the
// device, and a generator's state is just two integers that a checkpoint can store.
#include <array>
#include <cstdint>
#include <mutex>

#include "core/tensor.h"

namespace liandan {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed);
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // Philox blocks consumed so far
  void set_state(uint64_t seed, uint64_t offset);
  // Reserves `blocks` consecutive Philox counters and returns the first.
  uint64_t reserve(uint64_t blocks);

 private:
  uint64_t seed_ = 0, offset_ = 0;
  std::mutex mu_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);  // seeds the default generator

// U[0, 1) and N(0, 1). f32 uses 24 random bits per number, f64 53.
Tensor rand(const Shape& shape, Generator& gen = default_generator(), TensorOptions opt = {});
Tensor randn(const Shape& shape, Generator& gen = default_generator(), TensorOptions opt = {});
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen = default_generator());
Tensor randperm(int64_t n, Generator& gen = default_generator());  // i64
// Fills `out` (contiguous, floating) in place.
void fill_uniform_(Tensor& out, double lo, double hi, Generator& gen = default_generator());
void fill_normal_(Tensor& out, double mean, double std, Generator& gen = default_generator());

}  // namespace liandan
