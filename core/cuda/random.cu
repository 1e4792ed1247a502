// Random fills on CUDA: the Philox stream of core/random.cpp, element for element. Thread b computes Philox
// block first + b and writes the elements the CPU takes from that block, with the same formulas
// (core/philox.h is compiled for both), so rand/randn on a GPU equal the CPU's draws for the same seed and offset.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/philox.h"

namespace liandan::cuda_impl {
namespace {

template <class T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, T lo, T span) {
  constexpr int per = philox::uniform_per_block<T>();
  int64_t nblocks = (n + per - 1) / per;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nblocks; b += int64_t(gridDim.x) * blockDim.x) {
    philox::Block w = philox::block(seed, first + uint64_t(b));
    for (int j = 0; j < per && b * per + j < n; ++j) out[b * per + j] = philox::uniform_element<T>(w, j, lo, span);
  }
}

template <class T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t first, double mean, double std) {
  int64_t nblocks = (n + 1) / 2;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nblocks; b += int64_t(gridDim.x) * blockDim.x) {
    double z0, z1;
    philox::normal_pair(philox::block(seed, first + uint64_t(b)), mean, std, &z0, &z1);
    out[2 * b] = T(z0);
    if (2 * b + 1 < n) out[2 * b + 1] = T(z1);
  }
}

}  // namespace

void fill_uniform(const Tensor& out, double lo, double hi, uint64_t seed, uint64_t first) {
  int64_t n = out.numel();
  if (n == 0) return;
  LD_CUDA_FLOAT(out.dtype(), "fill_uniform_", [&] {
    int64_t nblocks = (n + philox::uniform_per_block<scalar_t>() - 1) / philox::uniform_per_block<scalar_t>();
    uniform_kernel<scalar_t><<<blocks_for(nblocks), kThreads, 0, stream_of(out)>>>(
        static_cast<scalar_t*>(out.device_data()), n, seed, first, scalar_t(lo), scalar_t(hi - lo));
  });
  LD_CUDA_LAUNCHED("fill_uniform_");
}

void fill_normal(const Tensor& out, double mean, double std, uint64_t seed, uint64_t first) {
  int64_t n = out.numel();
  if (n == 0) return;
  LD_CUDA_FLOAT(out.dtype(), "fill_normal_", [&] {
    normal_kernel<scalar_t><<<blocks_for((n + 1) / 2), kThreads, 0, stream_of(out)>>>(
        static_cast<scalar_t*>(out.device_data()), n, seed, first, mean, std);
  });
  LD_CUDA_LAUNCHED("fill_normal_");
}

}  // namespace liandan::cuda_impl
