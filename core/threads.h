#pragma once
// One thread pool for everything: OpenMP's. liandan links OpenBLAS's OpenMP build, so BLAS and
// liandan's own loops share the pool instead of two pools spinning against each other.
#include <cstdint>

namespace liandan {

void set_num_threads(int n);  // sets OpenMP's and OpenBLAS's thread count
int get_num_threads();

// Below this many elements a loop runs on one thread: a parallel region costs ~1-2 µs.
constexpr int64_t kParallelGrain = 32768;

}  // namespace liandan
