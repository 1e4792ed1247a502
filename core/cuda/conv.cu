// im2col and its adjoint on CUDA (core/ops/conv.cpp: unfold, and conv2d on a GPU = im2col + cuBLAS GEMMs).
// The columns are [N, K, L] with any (n, k) strides: unfold's [N, K, L], or conv2d's [K, N·L] (one GEMM over
// all images for the weight gradient).
// im2col: a block row per column-matrix row (n, c, i, j), its threads over the L = Ho·Wo columns, so the writes
// are coalesced and the index arithmetic per element is one division by Wo; the input may be a strided view and
// the columns a half format (the GEMM operand's cast done in the same pass).
// col2im: a thread per input pixel sums the column entries of the windows that cover it, in window order (i, j)
// — the CPU's col2im order, so the two agree bit for bit — with no atomics and no zero-fill of dx.
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

template <class X, class D>
__global__ void im2col_kernel(const X* x, Strides4 xs, D* col, ColStrides cs, ConvShape s, int64_t rows) {
  int64_t r = blockIdx.x * int64_t(blockDim.y) + threadIdx.y;
  if (r >= rows) return;
  int64_t K = s.C * s.kh * s.kw, Kt = K + s.extra_rows, k = r % Kt, n = r / Kt;
  int L = int(s.Ho * s.Wo), Wo = int(s.Wo);
  D* out = col + n * cs.n + k * cs.k;
  if (k >= K) {  // the bias's row of ones, then zeros
    for (int l = threadIdx.x; l < L; l += blockDim.x) out[l] = narrow<D>(k == K ? 1.0f : 0.0f);
    return;
  }
  int64_t c = k / (s.kh * s.kw), i = (k / s.kw) % s.kh, j = k % s.kw;
  const X* xc = x + n * xs.n + c * xs.c;
  for (int l = threadIdx.x; l < L; l += blockDim.x) {
    int oy = l / Wo, ox = l - oy * Wo;
    int64_t iy = oy * s.stride - s.pad + i, ix = ox * s.stride - s.pad + j;
    bool in = iy >= 0 && iy < s.H && ix >= 0 && ix < s.W;
    out[l] = in ? narrow<D>(widen(xc[iy * xs.y + ix * xs.x])) : narrow<D>(0.0f);
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
  dim3 block = row_block(s.Ho * s.Wo);
  with_float_type(x.dtype(), "im2col", [&](auto xt) {
    with_float_type(col.dtype(), "im2col", [&](auto dt) {
      using X = decltype(xt);
      using D = decltype(dt);
      im2col_kernel<X, D><<<row_grid(rows, block), block, 0, stream_of(col)>>>(
          static_cast<const X*>(x.device_data()), xs, static_cast<D*>(col.device_data()), col_strides(col, "im2col"), s, rows);
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
