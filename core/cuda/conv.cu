// im2col and its adjoint on CUDA (core/ops/conv.cpp: unfold, and conv2d on a GPU = im2col + cuBLAS GEMMs).
// The columns are [N, K, L] with any (n, k) strides: unfold's [N, K, L], or conv2d's [K, N·L] (one GEMM over
// all images for the weight gradient).
// im2col: a block row per column-matrix row (n, c, i, j), its threads over the L = Ho·Wo columns, so the writes
// are coalesced and the index arithmetic per element is one division by Wo; the input may be a strided view and
// the columns a half format (the GEMM operand's cast done in the same pass).
// col2im: a thread per input pixel sums the column entries of the windows that cover it, in window order (i, j)
// — the CPU's col2im order, so the two agree bit for bit — with no atomics and no zero-fill of dx.
#include <cstring>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

// Block shape for rows of `len` elements: x threads over a row (a multiple of a warp, at most kThreads), y rows.
dim3 row_block(int64_t len) {
  int64_t x = std::min<int64_t>(kThreads, (len + 31) / 32 * 32);
  return dim3(unsigned(x), unsigned(kThreads / x));
}
unsigned row_grid(int64_t rows, dim3 block) {
  int64_t g = (rows + block.y - 1) / block.y;
  LD_CHECK(g < (int64_t(1) << 31), "im2col/col2im on CUDA: ", rows, " rows are too many");
  return unsigned(g);
}

// Strides of x in elements: (n, c, y, x).
struct Strides4 {
  int64_t n, c, y, x;
};

// col's strides in elements: (n, k); its columns are contiguous.
struct ColStrides {
  int64_t n, k;
};

// V consecutive columns per thread (V·sizeof(D) = 16 bytes: one vector store instead of V scalar ones — im2col
// writes k² times what it reads) when the rows allow it: Wo and the row starts multiples of V; else V = 1.
template <class X, class D, int V>
__global__ void im2col_kernel(const X* x, Strides4 xs, D* col, ColStrides cs, ConvShape s, int64_t rows) {
  int64_t r = blockIdx.x * int64_t(blockDim.y) + threadIdx.y;
  if (r >= rows) return;
  int64_t K = s.C * s.kh * s.kw, Kt = K + s.extra_rows, k = r % Kt, n = r / Kt;
  int L = int(s.Ho * s.Wo), Wo = int(s.Wo);
  D* out = col + n * cs.n + k * cs.k;
  int64_t c = k / (s.kh * s.kw), i = (k / s.kw) % s.kh, j = k % s.kw;
  const X* xc = k < K ? x + n * xs.n + c * xs.c : x;
  for (int l0 = threadIdx.x * V; l0 < L; l0 += blockDim.x * V) {
    int oy = l0 / Wo, ox0 = l0 - oy * Wo;  // V columns in one output row (Wo % V == 0)
    int64_t iy = oy * s.stride - s.pad + i;
    D v[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      int64_t ix = (ox0 + e) * s.stride - s.pad + j;
      if (k >= K) v[e] = narrow<D>(k == K ? 1.0f : 0.0f);  // the bias's row of ones, then zeros
      else v[e] = iy >= 0 && iy < s.H && ix >= 0 && ix < s.W ? narrow<D>(widen(xc[iy * xs.y + ix * xs.x]))
                                                             : narrow<D>(0.0f);
    }
    if constexpr (V == 1) {
      out[l0] = v[0];
    } else {
      uint4 packed;
      memcpy(&packed, v, sizeof(packed));
      *reinterpret_cast<uint4*>(out + l0) = packed;
    }
  }
}

// dx [N, C, H, W] (contiguous) from col [N, C·kh·kw, Ho·Wo]; A: the accumulation type.
template <class D, class X, class A>
__global__ void col2im_kernel(const D* col, ColStrides cs, X* dx, ConvShape s, int64_t planes) {
  int64_t plane = blockIdx.x * int64_t(blockDim.y) + threadIdx.y;  // (n, c)
  if (plane >= planes) return;
  int64_t L = s.Ho * s.Wo;
  int64_t n = plane / s.C, c = plane % s.C;
  const D* cp = col + n * cs.n + c * s.kh * s.kw * cs.k;  // the rows (c, i, j) of plane (n, c)
  X* out = dx + plane * s.H * s.W;
  int HW = int(s.H * s.W), W = int(s.W);
  for (int p = threadIdx.x; p < HW; p += blockDim.x) {
    int iy = p / W, ix = p - iy * W;
    A acc = 0;
    for (int64_t i = 0; i < s.kh; ++i) {
      int64_t ty = iy + s.pad - i;
      if (ty < 0 || ty % s.stride != 0 || ty / s.stride >= s.Ho) continue;
      for (int64_t j = 0; j < s.kw; ++j) {
        int64_t tx = ix + s.pad - j;
        if (tx < 0 || tx % s.stride != 0 || tx / s.stride >= s.Wo) continue;
        acc += A(widen(cp[(i * s.kw + j) * cs.k + (ty / s.stride) * s.Wo + tx / s.stride]));
      }
    }
    out[p] = narrow<X>(acc);
  }
}

ColStrides col_strides(const Tensor& col, const char* op) {
  LD_CHECK(col.dim() == 3 && col.strides()[2] == 1, op, " on CUDA: the columns [N, K, L] must be contiguous along L, ",
           "got strides ", shape_str(col.strides()));
  return {col.strides()[0], col.strides()[1]};
}

}  // namespace

void im2col(const Tensor& x, const Tensor& col, const ConvShape& s) {
  int64_t rows = s.N * (s.C * s.kh * s.kw + s.extra_rows);
  if (rows == 0 || s.Ho * s.Wo == 0) return;
  LD_CHECK(s.Ho * s.Wo < (int64_t(1) << 31) && s.H * s.W < (int64_t(1) << 31), "im2col on CUDA: image too large");
  Strides4 xs{x.strides()[0], x.strides()[1], x.strides()[2], x.strides()[3]};
  ColStrides cs = col_strides(col, "im2col");
  with_float_type(x.dtype(), "im2col", [&](auto xt) {
    with_float_type(col.dtype(), "im2col", [&](auto dt) {
      using X = decltype(xt);
      using D = decltype(dt);
      constexpr int kV = 16 / int(sizeof(D));
      D* out = static_cast<D*>(col.device_data());
      bool vec = s.Wo % kV == 0 && cs.n % kV == 0 && cs.k % kV == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
      const X* px = static_cast<const X*>(x.device_data());
      if (vec) {
        dim3 block = row_block(s.Ho * s.Wo / kV);
        im2col_kernel<X, D, kV><<<row_grid(rows, block), block, 0, stream_of(col)>>>(px, xs, out, cs, s, rows);
      } else {
        dim3 block = row_block(s.Ho * s.Wo);
        im2col_kernel<X, D, 1><<<row_grid(rows, block), block, 0, stream_of(col)>>>(px, xs, out, cs, s, rows);
      }
    });
  });
  LD_CUDA_LAUNCHED("im2col");
}

void col2im(const Tensor& col, const Tensor& dx, const ConvShape& s) {
  int64_t planes = s.N * s.C;
  if (planes == 0 || s.H * s.W == 0) return;
  dim3 block = row_block(s.H * s.W);
  with_float_type(col.dtype(), "col2im", [&](auto ct) {
    with_float_type(dx.dtype(), "col2im", [&](auto xt) {
      using D = decltype(ct);
      using X = decltype(xt);
      using A = std::conditional_t<std::is_same_v<X, double>, double, float>;
      col2im_kernel<D, X, A><<<row_grid(planes, block), block, 0, stream_of(dx)>>>(
          static_cast<const D*>(col.device_data()), col_strides(col, "col2im"), static_cast<X*>(dx.device_data()), s,
          planes);
    });
  });
  LD_CUDA_LAUNCHED("col2im");
}

}  // namespace liandan::cuda_impl
