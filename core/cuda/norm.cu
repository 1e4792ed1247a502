// layer_norm / rms_norm and group_norm (+ SiLU) on CUDA, forward and backward, fused per row (core/ops/norm.cpp
// has the math and the CPU kernels). One block per row: the mean and the squared deviations are block sums (two passes over a row
// that stays in L1/L2), then y is written in a third. The backward's input gradient is one block per row the
// same way; the affine gradients are column sums over all rows, done deterministically in two stages (fixed
// row chunks, then the chunks summed in order by sum_run): no atomics anywhere.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

constexpr int64_t kRowChunk = 128;  // rows per partial column sum in the affine backward

// A row's mean (0 when not `center`: RMS norm) and 1/sqrt(mean squared deviation + eps), by two block sums (the
// mean, then the squared deviations from it: exact enough in double, and the row stays in L1/L2). Thread 0 also
// saves them for the backward at saved_mean / saved_rstd.
template <class T>
__device__ void row_stats(const T* xr, int64_t len, bool center, double eps, T* mean, T* rstd, T* saved_mean,
                          T* saved_rstd) {
  double s = 0;
  if (center)
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) s += double(xr[i]);
  T m = center ? T(block_sum(s) / double(len)) : T(0);
  double ss = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    double d = double(xr[i] - m);
    ss += d * d;
  }
  *mean = m;
  *rstd = T(1.0 / sqrt(block_sum(ss) / double(len) + eps));
  if (threadIdx.x == 0) {
    *saved_mean = *mean;
    *saved_rstd = *rstd;
  }
}

// Y: y's element type, T's or (under autocast) a half format: the next GEMM's operand, rounded once here.
template <class T, class Y>
__global__ void norm_forward_kernel(const T* x, const T* w, const T* b, Y* y, T* mean, T* rstd, int64_t rows,
                                    int64_t len, bool center, double eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    Y* yr = y + r * len;
    T m, rs;
    row_stats(xr, len, center, eps, &m, &rs, mean + r, rstd + r);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T v = (xr[i] - m) * rs;
      if (w) v = v * w[i];
      if (b) v = v + b[i];
      yr[i] = narrow<Y>(v);
    }
  }
}

// dx = rstd·(g·w − a − (x − m)·rstd·c), a = mean(g·w) (layer norm) or 0, c = rstd·mean(g·w·(x − m)).
// G: g's element type (a half y's gradient is half; widened exactly).
template <class T, class G>
__global__ void norm_backward_input_kernel(const T* x, const T* w, const G* g, const T* mean, const T* rstd, T* dx,
                                           int64_t rows, int64_t len, bool center) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    const G* gr = g + r * len;
    T* dr = dx + r * len;
    T m = mean[r], rs = rstd[r];
    double sd = 0, sgx = 0;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T gi = T(widen(gr[i]));
      double gw = double(w ? gi * w[i] : gi);
      sd += gw;
      sgx += gw * double(xr[i] - m);
    }
    sd = block_sum(sd);
    sgx = block_sum(sgx);
    T a = center ? T(sd / double(len)) : T(0), c = T(double(rs) * sgx / double(len));
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T gi = T(widen(gr[i])), gw = w ? gi * w[i] : gi;
      dr[i] = rs * (gw - a - (xr[i] - m) * rs * c);
    }
  }
}

// Stage 1 of dw = Σ_r g·(x − m)·rstd and db = Σ_r g: partial sums over chunks of kRowChunk rows, one thread
// per (chunk, column), written to [chunks, len] (double).
template <class T, class G>
__global__ void norm_affine_partial_kernel(const T* x, const G* g, const T* mean, const T* rstd, double* pw,
                                           double* pb, int64_t rows, int64_t len, int64_t chunks) {
  int64_t n = chunks * len;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t k = t / len, j = t % len, r1 = min(rows, (k + 1) * kRowChunk);
    double aw = 0, ab = 0;
    for (int64_t r = k * kRowChunk; r < r1; ++r) {
      T gv = T(widen(g[r * len + j]));
      aw += double(gv * (x[r * len + j] - mean[r]) * rstd[r]);
      ab += double(gv);
    }
    if (pw) pw[t] = aw;
    if (pb) pb[t] = ab;
  }
}

// ---- group norm: a row is one (sample n, group g) of cpg channels × S positions; channel c = g·cpg + i / S.
template <class T> __device__ T sigmoid_of(T z) { return T(1) / (T(1) + exp(-z)); }

template <class T, class Y>
__global__ void group_norm_forward_kernel(const T* x, const T* w, const T* b, Y* y, T* mean, T* rstd, int64_t rows,
                                          int64_t G, int64_t cpg, int64_t S, double eps, bool silu) {
  const int64_t len = cpg * S;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    Y* yr = y + r * len;
    T m, rs;
    row_stats(xr, len, true, eps, &m, &rs, mean + r, rstd + r);
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      int64_t c = (r % G) * cpg + i / S;
      T z = (xr[i] - m) * (rs * (w ? w[c] : T(1))) + (b ? b[c] : T(0));
      yr[i] = narrow<Y>(silu ? z * sigmoid_of(z) : z);
    }
  }
}

// Per row: dz = gy (or gy·silu'(z), z recomputed), the per-channel sums sg[n, c] = Σ_s dz and
// sgx[n, c] = Σ_s dz·(x − m) (double, for the affine gradients), then dx = rs·w·dz − rs²·cc·(x − m) − rs·a with
// a = Σ_c w·sg / len and cc = rs·Σ_c w·sgx / len, as gn_backward on the CPU. dz is parked in dx between passes.
template <class T, class G_>
__global__ void group_norm_backward_kernel(const T* x, const T* w, const T* b, const G_* gy, const T* mean,
                                           const T* rstd, T* dx, double* sg, double* sgx, int64_t rows, int64_t G,
                                           int64_t cpg, int64_t S, bool silu) {
  const int64_t len = cpg * S, C = G * cpg;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * len;
    const G_* gr = gy + r * len;
    const T m = mean[r], rs = rstd[r];
    const int64_t c0 = (r % G) * cpg, n = r / G;
    double sd = 0, sdx = 0;
    for (int64_t k = 0; k < cpg; ++k) {
      const T wc = w ? w[c0 + k] : T(1), bc = b ? b[c0 + k] : T(0);
      double a = 0, bb = 0;
      for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
        int64_t i = k * S + s;
        T dz = T(widen(gr[i]));
        if (silu) {
          T z = (xr[i] - m) * (rs * wc) + bc, sg_ = sigmoid_of(z);
          dz = dz * sg_ * (T(1) + z * (T(1) - sg_));
        }
        if (dx) dx[r * len + i] = dz;
        a += double(dz);
        bb += double(dz) * double(xr[i] - m);
      }
      a = block_sum(a);
      bb = block_sum(bb);
      if (threadIdx.x == 0) {
        sg[n * C + c0 + k] = a;
        sgx[n * C + c0 + k] = bb;
      }
      sd += double(wc) * a;
      sdx += double(wc) * bb;
    }
    if (!dx) continue;
    T a = T(sd / double(len)), cc = T(sdx / double(len)) * rs;
    for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
      T wc = w ? w[c0 + i / S] : T(1);
      T* d = dx + r * len + i;
      *d = (rs * wc) * *d + (-rs * rs * cc) * (xr[i] - m) + (-rs * a);
    }
  }
}

// dw[c] = Σ_n rstd[n, c / cpg]·sgx[n, c], db[c] = Σ_n sg[n, c]: one thread per channel, n in order.
template <class T>
__global__ void group_norm_affine_kernel(const double* sg, const double* sgx, const T* rstd, T* dw, T* db, int64_t N,
                                         int64_t G, int64_t cpg) {
  const int64_t C = G * cpg;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    double aw = 0, ab = 0;
    for (int64_t n = 0; n < N; ++n) {
      aw += double(rstd[n * G + c / cpg]) * sgx[n * C + c];
      ab += sg[n * C + c];
    }
    if (dw) dw[c] = T(aw);
    if (db) db[c] = T(ab);
  }
}

int row_blocks(int64_t rows) { return int(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

}  // namespace

void norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                  const Tensor& rstd, int64_t rows, int64_t len, bool center, double eps) {
  const char* name = center ? "layer_norm" : "rms_norm";
  if (rows == 0) return;
  LD_CUDA_FLOAT(x.dtype(), name, [&] {
    using T = scalar_t;
    with_float_type(y.dtype(), name, [&](auto yt) {
      using Y = decltype(yt);
      norm_forward_kernel<T, Y><<<row_blocks(rows), kThreads, 0, stream_of(y)>>>(
          static_cast<const T*>(x.device_data()), w.defined() ? static_cast<const T*>(w.device_data()) : nullptr,
          b.defined() ? static_cast<const T*>(b.device_data()) : nullptr, static_cast<Y*>(y.device_data()),
          static_cast<T*>(mean.device_data()), static_cast<T*>(rstd.device_data()), rows, len, center, eps);
    });
  });
  LD_CUDA_LAUNCHED(name);
}

void norm_backward(const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                   const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t rows, int64_t len, bool center) {
  const char* name = center ? "layer_norm backward" : "rms_norm backward";
  if (rows == 0 || len == 0) return;
  LD_CUDA_FLOAT(x.dtype(), name, [&] {
    using T = scalar_t;
    with_float_type(g.dtype(), name, [&](auto gt) {
      using G = decltype(gt);
      const T *px = static_cast<const T*>(x.device_data()), *pm = static_cast<const T*>(mean.device_data()),
              *pr = static_cast<const T*>(rstd.device_data());
      const G* pg = static_cast<const G*>(g.device_data());
      if (dx.defined())
        norm_backward_input_kernel<T, G><<<row_blocks(rows), kThreads, 0, stream_of(dx)>>>(
            px, w.defined() ? static_cast<const T*>(w.device_data()) : nullptr, pg, pm, pr,
            static_cast<T*>(dx.device_data()), rows, len, center);
      if (!dw.defined() && !db.defined()) return;
      int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
      TensorOptions f64{DType::f64, x.device()};
      Tensor pw = dw.defined() ? empty({chunks, len}, f64) : Tensor(),
             pb = db.defined() ? empty({chunks, len}, f64) : Tensor();
      norm_affine_partial_kernel<T, G><<<blocks_for(chunks * len), kThreads, 0, stream_of(x)>>>(
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
  });
  LD_CUDA_LAUNCHED(name);
}

void group_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                        const Tensor& rstd, int64_t N, int64_t C, int64_t G, int64_t S, double eps, bool silu) {
  int64_t rows = N * G;
  if (rows == 0 || C == 0 || S == 0) return;
  LD_CUDA_FLOAT(x.dtype(), "group_norm", [&] {
    using T = scalar_t;
    with_float_type(y.dtype(), "group_norm", [&](auto yt) {
      using Y = decltype(yt);
      group_norm_forward_kernel<T, Y><<<row_blocks(rows), kThreads, 0, stream_of(y)>>>(
          static_cast<const T*>(x.device_data()), w.defined() ? static_cast<const T*>(w.device_data()) : nullptr,
          b.defined() ? static_cast<const T*>(b.device_data()) : nullptr, static_cast<Y*>(y.device_data()),
          static_cast<T*>(mean.device_data()), static_cast<T*>(rstd.device_data()), rows, G, C / G, S, eps, silu);
    });
  });
  LD_CUDA_LAUNCHED("group_norm");
}

void group_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t N, int64_t C,
                         int64_t G, int64_t S, bool silu) {
  int64_t rows = N * G;
  if (rows == 0 || C == 0 || S == 0) {
    for (const Tensor& t : {dw, db})
      if (t.defined()) fill(t, 0.0);
    return;
  }
  TensorOptions f64{DType::f64, x.device()};
  Tensor sg = empty({N * C}, f64), sgx = empty({N * C}, f64);
  LD_CUDA_FLOAT(x.dtype(), "group_norm backward", [&] {
    using T = scalar_t;
    const T* pr = static_cast<const T*>(rstd.device_data());
    with_float_type(g.dtype(), "group_norm backward", [&](auto gt) {
      using G_ = decltype(gt);
      group_norm_backward_kernel<T, G_><<<row_blocks(rows), kThreads, 0, stream_of(x)>>>(
          static_cast<const T*>(x.device_data()), w.defined() ? static_cast<const T*>(w.device_data()) : nullptr,
          b.defined() ? static_cast<const T*>(b.device_data()) : nullptr, static_cast<const G_*>(g.device_data()),
          static_cast<const T*>(mean.device_data()), pr, dx.defined() ? static_cast<T*>(dx.device_data()) : nullptr,
          static_cast<double*>(sg.device_data()), static_cast<double*>(sgx.device_data()), rows, G, C / G, S, silu);
    });
    if (dw.defined() || db.defined())
      group_norm_affine_kernel<T><<<blocks_for(C), kThreads, 0, stream_of(x)>>>(
          static_cast<const double*>(sg.device_data()), static_cast<const double*>(sgx.device_data()), pr,
          dw.defined() ? static_cast<T*>(dw.device_data()) : nullptr,
          db.defined() ? static_cast<T*>(db.device_data()) : nullptr, N, G, C / G);
  });
  LD_CUDA_LAUNCHED("group_norm backward");
}

}  // namespace liandan::cuda_impl
