// layer_norm / rms_norm on CUDA, forward and backward, fused per row (core/ops/norm.cpp has the math and the
// CPU kernels). One block per row: the mean and the squared deviations are block sums (two passes over a row
// that stays in L1/L2), then y is written in a third. The backward's input gradient is one block per row the
// same way; the affine gradients are column sums over all rows, done deterministically in two stages (fixed
// row chunks, then the chunks summed in order by sum_run): no atomics anywhere.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

constexpr int64_t kRowChunk = 128;  // rows per partial column sum in the affine backward

// The sum of v over the block, returned to every thread; a fixed shuffle-then-shared tree (deterministic).
// blockDim.x must be a multiple of 32 (kThreads is).
__device__ double block_sum(double v) {
  __shared__ double warp_sums[32];
  __shared__ double total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // an earlier call may still be reading warp_sums / total
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

template <class T>
__global__ void norm_forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                                    int64_t len, bool center, double eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    T* yr = y + r * len;
    double s = 0;
    if (center)
      for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += double(xr[i]);
    T m = center ? T(block_sum(s) / double(len)) : T(0);
    double ss = 0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      double d = double(xr[i] - m);
      ss += d * d;
    }
    T rs = T(1.0 / sqrt(block_sum(ss) / double(len) + eps));
    if (threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T v = (xr[i] - m) * rs;
      if (w) v = v * w[i];
      if (b) v = v + b[i];
      yr[i] = v;
    }
  }
}

// dx = rstd·(g·w − a − (x − m)·rstd·c), a = mean(g·w) (layer norm) or 0, c = rstd·mean(g·w·(x − m)).
template <class T>
__global__ void norm_backward_input_kernel(const T* x, const T* w, const T* g, const T* mean, const T* rstd, T* dx,
                                           int64_t rows, int64_t len, bool center) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * len, *gr = g + r * len;
    T* dr = dx + r * len;
    T m = mean[r], rs = rstd[r];
    double sd = 0, sgx = 0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      double gw = double(w ? gr[i] * w[i] : gr[i]);
      sd += gw;
      sgx += gw * double(xr[i] - m);
    }
    sd = block_sum(sd);
    sgx = block_sum(sgx);
    T a = center ? T(sd / double(len)) : T(0), c = T(double(rs) * sgx / double(len));
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T gw = w ? gr[i] * w[i] : gr[i];
      dr[i] = rs * (gw - a - (xr[i] - m) * rs * c);
    }
  }
}

// Stage 1 of dw = Σ_r g·(x − m)·rstd and db = Σ_r g: partial sums over chunks of kRowChunk rows, one thread
// per (chunk, column), written to [chunks, len] (double).
template <class T>
__global__ void norm_affine_partial_kernel(const T* x, const T* g, const T* mean, const T* rstd, double* pw,
                                           double* pb, int64_t rows, int64_t len, int64_t chunks) {
  int64_t n = chunks * len;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t k = t / len, j = t % len, r1 = min(rows, (k + 1) * kRowChunk);
    double aw = 0, ab = 0;
    for (int64_t r = k * kRowChunk; r < r1; ++r) {
      T gv = g[r * len + j];
      aw += double(gv * (x[r * len + j] - mean[r]) * rstd[r]);
      ab += double(gv);
    }
    if (pw) pw[t] = aw;
    if (pb) pb[t] = ab;
  }
}

int row_blocks(int64_t rows) { return int(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

}  // namespace

void norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                  const Tensor& rstd, int64_t rows, int64_t len, bool center, double eps) {
  if (rows == 0) return;
  LD_CUDA_FLOAT(x.dtype(), center ? "layer_norm" : "rms_norm", [&] {
    using T = scalar_t;
    norm_forward_kernel<T><<<row_blocks(rows), kThreads, 0, stream_of(y)>>>(
        static_cast<const T*>(x.device_data()), w.defined() ? static_cast<const T*>(w.device_data()) : nullptr,
        b.defined() ? static_cast<const T*>(b.device_data()) : nullptr, static_cast<T*>(y.device_data()),
        static_cast<T*>(mean.device_data()), static_cast<T*>(rstd.device_data()), rows, len, center, eps);
  });
  LD_CUDA_LAUNCHED(center ? "layer_norm" : "rms_norm");
}

void norm_backward(const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                   const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t rows, int64_t len, bool center) {
  const char* name = center ? "layer_norm backward" : "rms_norm backward";
  if (rows == 0 || len == 0) return;
  LD_CUDA_FLOAT(x.dtype(), name, [&] {
    using T = scalar_t;
    const T *px = static_cast<const T*>(x.device_data()), *pg = static_cast<const T*>(g.device_data()),
            *pm = static_cast<const T*>(mean.device_data()), *pr = static_cast<const T*>(rstd.device_data());
    if (dx.defined())
      norm_backward_input_kernel<T><<<row_blocks(rows), kThreads, 0, stream_of(dx)>>>(
          px, w.defined() ? static_cast<const T*>(w.device_data()) : nullptr, pg, pm, pr,
          static_cast<T*>(dx.device_data()), rows, len, center);
    if (!dw.defined() && !db.defined()) return;
    int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
    TensorOptions f64{DType::f64, x.device()};
    Tensor pw = dw.defined() ? empty({chunks, len}, f64) : Tensor(), pb = db.defined() ? empty({chunks, len}, f64) : Tensor();
    norm_affine_partial_kernel<T><<<blocks_for(chunks * len), kThreads, 0, stream_of(x)>>>(
        px, pg, pm, pr, pw.defined() ? static_cast<double*>(pw.device_data()) : nullptr,
        pb.defined() ? static_cast<double*>(pb.device_data()) : nullptr, rows, len, chunks);
    // Stage 2: the chunks summed in order (the deterministic column sum), then rounded to T.
    for (auto [part, out] : {std::pair{pw, dw}, std::pair{pb, db}}) {
      if (!out.defined()) continue;
      Tensor total = empty({len}, f64);
      sum_run(part, 1, chunks, len, total);
      copy_strided(out, total.reshape(out.shape()), contiguous_strides(out.shape()));
    }
  });
  LD_CUDA_LAUNCHED(name);
}

}  // namespace liandan::cuda_impl
