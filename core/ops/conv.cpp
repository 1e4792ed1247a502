// conv2d by im2col + GEMM over chunks of images (one chunk per thread; OpenBLAS runs single-threaded
// inside the parallel region, so the two cores never fight), and the pooling/upsampling ops.
//   forward:  col = im2col(x[chunk]);  y[chunk, g] = W[g] @ col[g]
//   backward: dW[g] = sum over chunks of dy[chunk, g] @ col[g]^T   (chunk order: deterministic)
//             dx[chunk] = col2im(W[g]^T @ dy[chunk, g])

#include "core/cpu/blas.h"
#include "core/cpu/loops.h"
#include "core/ops.h"

namespace liandan {

namespace {

struct ConvGeom {
  int64_t N, C, H, W, O, kh, kw, stride, pad, groups, Ho, Wo;
  int64_t cg() const { return C / groups; }            // input channels per group
  int64_t og() const { return O / groups; }            // output channels per group
  int64_t krows() const { return cg() * kh * kw; }     // rows of a group's column matrix
  int64_t cols() const { return Ho * Wo; }
};

// Output columns ox whose input column ox*stride - pad + j lies inside [0, W): [lo, hi).
inline std::pair<int64_t, int64_t> valid_cols(const ConvGeom& g, int64_t j) {
  int64_t lo = std::max<int64_t>(0, (g.pad - j + g.stride - 1) / g.stride);
  int64_t hi = std::min<int64_t>(g.Wo, (g.W - 1 + g.pad - j) / g.stride + 1);
  if (g.W - 1 + g.pad - j < 0) hi = 0;
  return {lo, std::max(lo, hi)};
}

// col[(c*kh + i)*kw + j, oy*Wo + ox] = x[c, oy*s - p + i, ox*s - p + j] (0 outside the image).
// Rows of `col` are `ldc` apart, so several images' columns can sit side by side. The valid column
// range is computed once per kernel offset, so the inner loop is a plain (often contiguous) copy.
template <class T>
void im2col(const ConvGeom& g, const T* x, T* col, int64_t ldc) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        auto [lo, hi] = valid_cols(g, j);
        T* dst = col + ((c * g.kh + i) * g.kw + j) * ldc;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          int64_t iy = oy * g.stride - g.pad + i;
          T* row = dst + oy * g.Wo;
          if (iy < 0 || iy >= g.H) {
            std::fill(row, row + g.Wo, T(0));
            continue;
          }
          const T* src = x + (c * g.H + iy) * g.W - g.pad + j;  // src[ox * stride] = x[c, iy, ox*s - p + j]
          std::fill(row, row + lo, T(0));
          if (g.stride == 1) std::copy(src + lo, src + hi, row + lo);
          else for (int64_t ox = lo; ox < hi; ++ox) row[ox] = src[ox * g.stride];
          std::fill(row + hi, row + g.Wo, T(0));
        }
      }
}

// The adjoint of im2col: dx[c, iy, ix] += dcol[...] (dx zeroed by the caller).
template <class T>
void col2im(const ConvGeom& g, const T* col, T* dx, int64_t ldc) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        auto [lo, hi] = valid_cols(g, j);
        const T* src = col + ((c * g.kh + i) * g.kw + j) * ldc;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.H) continue;
          T* row = dx + (c * g.H + iy) * g.W - g.pad + j;
          const T* s = src + oy * g.Wo;
          for (int64_t ox = lo; ox < hi; ++ox) row[ox * g.stride] += s[ox];
        }
      }
}

// Images per chunk: forward and backward work on chunks of images in parallel (see below).
constexpr int64_t kImageChunk = 8;

// Forward in chunks of images: their columns side by side make one GEMM per group with
// N = chunk * Ho * Wo (a small per-image GEMM runs far below BLAS's peak), then the chunk's
// [O, chunk*HW] result is copied out to [N, O, HW] with the bias added.
template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y) {
  int64_t HW = g.cols(), CHW = g.C * g.H * g.W, rows = g.C * g.kh * g.kw;
  int64_t nchunk = (g.N + kImageChunk - 1) / kImageChunk;
  cpu::parallel_range(nchunk, [&](int64_t c0, int64_t c1) {
    std::vector<T> col(static_cast<size_t>(rows * kImageChunk * HW)), ych(static_cast<size_t>(g.O * kImageChunk * HW));
    for (int64_t c = c0; c < c1; ++c) {
      int64_t n0 = c * kImageChunk, nb = std::min(kImageChunk, g.N - n0), L = nb * HW;
      for (int64_t j = 0; j < nb; ++j) im2col(g, x + (n0 + j) * CHW, col.data() + j * HW, L);
      for (int64_t gr = 0; gr < g.groups; ++gr)
        cpu::gemm<T>(false, false, g.og(), L, g.krows(), T(1), w + gr * g.og() * g.krows(), g.krows(),
                col.data() + gr * g.krows() * L, L, T(0), ych.data() + gr * g.og() * L, L);
      for (int64_t j = 0; j < nb; ++j)
        for (int64_t o = 0; o < g.O; ++o) {
          const T* src = ych.data() + o * L + j * HW;
          T* dst = y + ((n0 + j) * g.O + o) * HW;
          T bo = b ? b[o] : T(0);
          for (int64_t s = 0; s < HW; ++s) dst[s] = src[s] + bo;
        }
    }
  }, 1);
}

// Backward in fixed chunks of images, in parallel: a chunk lays its images' columns side by side,
// so each group needs one GEMM with K = chunk * Ho * Wo for dW (and one for dcol) instead of one
// small GEMM per image. Chunk partial sums of dW and db are added in chunk order, so the result
// does not depend on the thread count.
template <class T>
void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  int64_t HW = g.cols(), CHW = g.C * g.H * g.W, rows = g.C * g.kh * g.kw;
  int64_t nchunk = (g.N + kImageChunk - 1) / kImageChunk;
  std::vector<T> dw_part(dw ? static_cast<size_t>(nchunk * g.O * g.krows()) : 0);
  std::vector<double> db_part(db ? static_cast<size_t>(nchunk * g.O) : 0);
  cpu::parallel_range(nchunk, [&](int64_t c0, int64_t c1) {
    std::vector<T> col(static_cast<size_t>(rows * kImageChunk * HW)), dyc(static_cast<size_t>(g.O * kImageChunk * HW));
    for (int64_t c = c0; c < c1; ++c) {
      int64_t n0 = c * kImageChunk, nb = std::min(kImageChunk, g.N - n0), L = nb * HW;
      for (int64_t j = 0; j < nb; ++j)  // dyc[o, j*HW + s] = dy[n0 + j, o, s]
        for (int64_t o = 0; o < g.O; ++o)
          std::copy(dy + ((n0 + j) * g.O + o) * HW, dy + ((n0 + j) * g.O + o + 1) * HW, dyc.data() + o * L + j * HW);
      if (db)
        for (int64_t o = 0; o < g.O; ++o) {
          double acc = 0;
          for (int64_t s = 0; s < L; ++s) acc += double(dyc[o * L + s]);
          db_part[c * g.O + o] = acc;
        }
      if (dw) {
        for (int64_t j = 0; j < nb; ++j) im2col(g, x + (n0 + j) * CHW, col.data() + j * HW, L);
        for (int64_t gr = 0; gr < g.groups; ++gr)
          cpu::gemm<T>(false, true, g.og(), g.krows(), L, T(1), dyc.data() + gr * g.og() * L, L,
                  col.data() + gr * g.krows() * L, L, T(0), dw_part.data() + (c * g.O + gr * g.og()) * g.krows(),
                  g.krows());
      }
      if (dx) {
        T* dcol = col.data();  // reuse the buffer: dW is done with it
        for (int64_t gr = 0; gr < g.groups; ++gr)
          cpu::gemm<T>(true, false, g.krows(), L, g.og(), T(1), w + gr * g.og() * g.krows(), g.krows(),
                  dyc.data() + gr * g.og() * L, L, T(0), dcol + gr * g.krows() * L, L);
        for (int64_t j = 0; j < nb; ++j) {
          T* dxn = dx + (n0 + j) * CHW;
          std::fill(dxn, dxn + CHW, T(0));
          col2im(g, dcol + j * HW, dxn, L);
        }
      }
    }
  }, 1);
  if (dw) {
    std::fill(dw, dw + g.O * g.krows(), T(0));
    for (int64_t c = 0; c < nchunk; ++c)
      for (int64_t i = 0; i < g.O * g.krows(); ++i) dw[i] += dw_part[c * g.O * g.krows() + i];
  }
  if (db)
    for (int64_t o = 0; o < g.O; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < nchunk; ++c) acc += db_part[c * g.O + o];
      db[o] = T(acc);
    }
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups) {
  LD_CHECK(x.defined() && x.dim() == 4, "conv2d: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(weight.defined() && weight.dim() == 4, "conv2d: expected weight [O, C/groups, kh, kw], got ",
           weight.defined() ? shape_str(weight.shape()) : "undefined");
  LD_CHECK(x.dtype() == weight.dtype(), "conv2d: dtype mismatch input ", dtype_name(x.dtype()), " vs weight ",
           dtype_name(weight.dtype()));
  LD_CHECK(stride >= 1 && padding >= 0 && groups >= 1, "conv2d: bad stride ", stride, ", padding ", padding,
           " or groups ", groups);
  ConvGeom g{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], weight.shape()[0], weight.shape()[2],
             weight.shape()[3], stride, padding, groups, 0, 0};
  LD_CHECK(g.C % groups == 0 && g.O % groups == 0 && weight.shape()[1] == g.C / groups, "conv2d: input ",
           shape_str(x.shape()), " and weight ", shape_str(weight.shape()), " do not match with groups=", groups,
           " (weight dim 1 must be C/groups = ", g.C / groups, ")");
  if (bias.defined())
    LD_CHECK(bias.shape() == Shape{g.O} && bias.dtype() == x.dtype(), "conv2d: bias must be [", g.O, "] ",
             dtype_name(x.dtype()), ", got ", shape_str(bias.shape()));
  g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
  LD_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, "conv2d: kernel ", g.kh, "x", g.kw,
           " larger than padded input ", g.H + 2 * padding, "x", g.W + 2 * padding);
  Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.defined() ? bias.contiguous() : bias;
  Tensor y = empty({g.N, g.O, g.Ho, g.Wo}, x.dtype());
  LD_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    conv_forward<scalar_t>(g, xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(),
                           bc.defined() ? bc.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>());
  });
  if (needs_grad({&x, &weight, &bias})) {
    SavedTensor sx(xc, "conv2d"), sw(wc, "conv2d");
    bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record("conv2d", y, {x, weight, bias}, [=](const Tensor& g_in) {
      Tensor dy = g_in.contiguous();
      const Tensor &xv = sx.get(), &wv = sw.get();
      Tensor dx = gx ? empty(xv.shape(), dy.dtype()) : Tensor(), dw = gw ? empty(wv.shape(), dy.dtype()) : Tensor(),
             db = gb ? empty({g.O}, dy.dtype()) : Tensor();
      LD_DISPATCH_FLOAT(dy.dtype(), "conv2d backward", [&] {
        conv_backward<scalar_t>(g, xv.data_ptr<scalar_t>(), wv.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                gx ? dx.data_ptr<scalar_t>() : nullptr, gw ? dw.data_ptr<scalar_t>() : nullptr,
                                gb ? db.data_ptr<scalar_t>() : nullptr);
      });
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

// avg_pool2d (count_include_pad = true, as torch's default) as a depthwise conv with a constant
// kernel would be wasteful; a direct loop with its adjoint is simpler.
namespace {
template <class T, bool Backward>
void avg_pool_kernel(const T* in, T* out, int64_t NC, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k,
                     int64_t s, int64_t p) {
  T inv = T(1.0 / double(k * k));
  cpu::parallel_range(NC, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      if constexpr (Backward) std::fill(out + c * H * W, out + (c + 1) * H * W, T(0));
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          T acc = 0;
          for (int64_t i = 0; i < k; ++i) {
            int64_t iy = oy * s - p + i;
            if (iy < 0 || iy >= H) continue;
            for (int64_t j = 0; j < k; ++j) {
              int64_t ix = ox * s - p + j;
              if (ix < 0 || ix >= W) continue;
              if constexpr (Backward) out[(c * H + iy) * W + ix] += in[(c * Ho + oy) * Wo + ox] * inv;
              else acc += in[(c * H + iy) * W + ix];
            }
          }
          if constexpr (!Backward) out[(c * Ho + oy) * Wo + ox] = acc * inv;
        }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, H * W)));
}
}  // namespace

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  LD_CHECK(x.defined() && x.dim() == 4, "avg_pool2d: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  if (stride == 0) stride = kernel;
  LD_CHECK(kernel >= 1 && stride >= 1 && padding >= 0 && 2 * padding <= kernel, "avg_pool2d: bad kernel ", kernel,
           ", stride ", stride, " or padding ", padding, " (padding must be at most half the kernel)");
  int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  LD_CHECK(H + 2 * padding >= kernel && W + 2 * padding >= kernel, "avg_pool2d: kernel ", kernel,
           " larger than padded input ", shape_str(x.shape()));
  int64_t Ho = (H + 2 * padding - kernel) / stride + 1, Wo = (W + 2 * padding - kernel) / stride + 1;
  Tensor xc = x.contiguous(), y = empty({N, C, Ho, Wo}, x.dtype());
  LD_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", [&] {
    avg_pool_kernel<scalar_t, false>(xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), N * C, H, W, Ho, Wo, kernel,
                                     stride, padding);
  });
  Shape xs = x.shape();
  record("avg_pool2d", y, {x}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous(), dx = empty(xs, g.dtype());
    LD_DISPATCH_FLOAT(g.dtype(), "avg_pool2d backward", [&] {
      avg_pool_kernel<scalar_t, true>(g.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), N * C, H, W, Ho, Wo, kernel,
                                      stride, padding);
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

// Nearest upsampling by an integer factor is a broadcast: [N,C,H,1,W,1] -> [N,C,H,s,W,s].
// Its backward (sum over each s x s block) comes from expand's backward for free.
Tensor upsample_nearest2d(const Tensor& x, int64_t scale) {
  LD_CHECK(x.defined() && x.dim() == 4, "upsample_nearest2d: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(scale >= 1, "upsample_nearest2d: scale must be >= 1, got ", scale);
  int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  return x.reshape({N, C, H, 1, W, 1}).expand({N, C, H, scale, W, scale}).contiguous().reshape({N, C, H * scale, W * scale});
}

}  // namespace liandan
