#pragma once
// The CPU convolution kernels behind conv2d (core/ops/conv.cpp), for f32 and f64:
//   direct (stride 1, no groups, 3x3 with padding <= 2 or 1x1): register-tiled AVX-512 kernels vectorized over
//     output channels, for the forward, for dx (the same pass over dy with the flipped, transposed kernel) and
//     for dW; no column matrix;
//   im2col + GEMM (everything else: strides, groups, other kernel sizes), over chunks of images (one chunk per
//     thread; a single chunk's GEMMs split into fixed column blocks, cpu::gemm_columns).
// Both give results that do not depend on the thread count: every BLAS call is single-threaded on a block that
// depends only on the shape. The op (autograd, devices, autocast) is core/ops/conv.cpp.
#include <algorithm>
#include <cstdint>

#include "core/dtype.h"

namespace liandan::cpu {

struct ConvGeom {
  int64_t N, C, H, W, O, kh, kw, stride, pad, groups, Ho, Wo;
  int64_t cg() const { return C / groups; }            // input channels per group
  int64_t og() const { return O / groups; }            // output channels per group
  int64_t krows() const { return cg() * kh * kw; }     // rows of a group's column matrix
  int64_t cols() const { return Ho * Wo; }
};

// Grain for parallel_range over tasks of `work` multiply-adds (or element copies) each: a thread should
// get at least ~kParallelWork of them, or the parallel region (a few microseconds, more when the pool
// sleeps between regions) costs more than it saves. Small convolutions run on one thread.
constexpr int64_t kParallelWork = int64_t(1) << 17;
inline int64_t work_grain(int64_t work) { return std::max<int64_t>(1, kParallelWork / std::max<int64_t>(1, work)); }

// The direct kernels take this convolution (stride 1, groups 1, 3x3 with padding <= 2 or 1x1 without).
bool direct_path(const ConvGeom& g);

// y = conv(x, w) + b (b may be null), and its backward (each of dx, dw, db may be null), for T = float or double.
template <class T> void direct_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y, DType dt);
template <class T>
void direct_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, DType dt);
template <class T> void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y);
template <class T> void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db);

// col[(c*kh + i)*kw + j, oy*Wo + ox] = x[c, oy*s - p + i, ox*s - p + j] (0 outside the image), rows `ldc` apart;
// col2im is its adjoint: dx += (dx zeroed by the caller). One image each.
template <class T> void im2col(const ConvGeom& g, const T* x, T* col, int64_t ldc);
template <class T> void col2im(const ConvGeom& g, const T* col, T* dx, int64_t ldc);

}  // namespace liandan::cpu
