// ZLPR (hard and soft targets) on CUDA (losses::zlpr_rows, losses/kernels.h): the fused row kernel of
// losses/zlpr.cpp, one warp per row of C logits.
// Per row, the exponent sets a_i = s_i + log(1 − t_i) and b_i = −s_i + log t_i (−inf outside a set) are
// recomputed in each of three passes rather than stored: their maxima (with the appended 0 logit), the sums
// of e^{a − max} and e^{b − max}, and — when a gradient is wanted — dL/ds_i = e^{a_i − lse_a} − e^{b_i − lse_b}.
// So the forward and the whole backward read the logits and targets three times from L1/L2 and write the
// gradient once; the composite (where, cat, logsumexp and their backward) runs about twenty kernels.
// Warp sums are fixed butterflies (deterministic). A target outside {0, 1} (hard) or [0, 1] (soft) sets *bad
// (an i64 flag: the only atomic, and not in a result).
#include <cmath>

#include "core/cuda/common.cuh"
#include "losses/kernels.h"

namespace liandan::losses {
namespace {

using namespace cuda_impl;

constexpr double kMaskedLogit = -1e11;  // logits <= this are invalid (losses/zlpr.cpp)

// The two exponents of one entry, exactly as hard_exponents / soft_exponents in losses/zlpr.cpp.
template <class T, bool kSoft>
__device__ inline void zlpr_exponents(T s, T t, T eps, T& a, T& b, int& bad) {
  const T ninf = -INFINITY;
  bool valid = !(s <= T(kMaskedLogit));  // NaN logits count as valid, so they reach the loss
  if (kSoft) {
    bad |= int(!(t >= T(0) && t <= T(1)));
    T tq = t < eps ? T(0) : t > T(1) - eps ? T(1) : t;
    a = (valid && tq < T(1)) ? s + ::log1p(-tq) : ninf;
    b = (valid && tq > T(0)) ? -s + ::log(tq) : ninf;
  } else {
    bool pos = t != T(0);
    bad |= int(t != T(0)) & int(t != T(1));
    a = (valid && !pos) ? s : ninf;
    b = (valid && pos) ? -s : ninf;
  }
}

template <class T, bool kSoft>
__global__ void zlpr_rows_kernel(const T* s, const T* t, T* loss, T* grad, int64_t rows, int64_t C, T eps,
                                 unsigned long long* bad) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; r < rows; r += warps) {
    const T *sr = s + r * C, *tr = t + r * C;
    int row_bad = 0;
    T ma = 0, mb = 0, a, b;  // the appended 0 logit bounds both maxima from below
    for (int64_t k = lane; k < C; k += 32) {
      zlpr_exponents<T, kSoft>(sr[k], tr[k], eps, a, b, row_bad);
      ma = a > ma ? a : ma;
      mb = b > mb ? b : mb;
    }
    ma = warp_max(ma);
    mb = warp_max(mb);
    double sa = 0, sb = 0;
    for (int64_t k = lane; k < C; k += 32) {
      zlpr_exponents<T, kSoft>(sr[k], tr[k], eps, a, b, row_bad);
      sa += double(::exp(a - ma));
      sb += double(::exp(b - mb));
    }
    sa = warp_sum(sa) + ::exp(-double(ma));
    sb = warp_sum(sb) + ::exp(-double(mb));
    if (lane == 0) loss[r] = T((double(ma) + ::log(sa)) + (double(mb) + ::log(sb)));
    if (row_bad) atomicOr(bad, 1ull);
    if (grad) {
      T ia = T(1 / sa), ib = T(1 / sb);
      T* gr = grad + r * C;
      for (int64_t k = lane; k < C; k += 32) {
        zlpr_exponents<T, kSoft>(sr[k], tr[k], eps, a, b, row_bad);
        gr[k] = ::exp(a - ma) * ia - ::exp(b - mb) * ib;
      }
    }
  }
}

void zlpr_rows_cuda(const Tensor& s, const Tensor& t, const Tensor& loss, const Tensor& grad, int64_t rows, int64_t C,
               bool soft, double eps, const Tensor& bad) {
  if (rows == 0) return;
  constexpr int kRowsPerBlock = kThreads / 32;
  int blocks = int(std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 65535 * 16));
  LD_CUDA_FLOAT(s.dtype(), "zlpr", [&] {
    using T = scalar_t;
    auto ptr = [](const Tensor& x) { return x.defined() ? static_cast<T*>(x.device_data()) : nullptr; };
    auto launch = [&](auto kernel) {
      kernel<<<blocks, kThreads, 0, stream_of(s)>>>(ptr(s), ptr(t), ptr(loss), ptr(grad), rows, C, T(eps),
                                                    static_cast<unsigned long long*>(bad.device_data()));
    };
    if (soft) launch(zlpr_rows_kernel<T, true>);
    else launch(zlpr_rows_kernel<T, false>);
  });
  LD_CUDA_LAUNCHED("zlpr");
}

}  // namespace

LD_KERNEL_FILE(losses_zlpr);
LD_REGISTER_KERNEL(zlpr_rows, CUDA, zlpr_rows_cuda);

}  // namespace liandan::losses
