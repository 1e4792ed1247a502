// avg_pool2d and upsample_nearest2d: direct loops with their adjoints.
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#include <immintrin.h>
#include "core/cpu/blas.h"
#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"

namespace liandan {

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
  if (!x.device().is_cpu()) return composite::avg_pool2d(x, kernel, stride, padding);
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

// Nearest upsampling by an integer factor s: y[.., i, j] = x[.., i / s, j / s]; its backward sums each
// s x s block of the gradient. Both are one pass over contiguous rows, parallel over the N * C planes.
namespace {
template <class T, bool Backward>
void upsample_kernel(const T* in, T* out, int64_t NC, int64_t H, int64_t W, int64_t s) {
  const int64_t Wo = W * s, plane = H * W * s * s;
  cpu::parallel_range(NC, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      for (int64_t i = 0; i < H; ++i) {
        if constexpr (Backward) {  // in: the gradient [H s][W s]; out: [H][W]
          const T* g = in + c * plane + i * s * Wo;
          T* d = out + (c * H + i) * W;
          for (int64_t j = 0; j < W; ++j) {
            T acc = 0;
            for (int64_t a = 0; a < s; ++a)
              for (int64_t k = 0; k < s; ++k) acc += g[a * Wo + j * s + k];
            d[j] = acc;
          }
        } else {
          const T* xr = in + (c * H + i) * W;
          T* row = out + c * plane + i * s * Wo;
          for (int64_t j = 0; j < Wo; ++j) row[j] = xr[j / s];
          for (int64_t a = 1; a < s; ++a) std::copy(row, row + Wo, row + a * Wo);
        }
      }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, plane)));
}
}  // namespace

Tensor upsample_nearest2d(const Tensor& x, int64_t scale) {
  LD_CHECK(x.defined() && x.dim() == 4, "upsample_nearest2d: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(scale >= 1, "upsample_nearest2d: scale must be >= 1, got ", scale);
  if (!x.device().is_cpu()) return composite::upsample_nearest2d(x, scale);
  int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  Tensor xc = x.contiguous(), y = empty({N, C, H * scale, W * scale}, x.dtype());
  LD_DISPATCH_FLOAT(x.dtype(), "upsample_nearest2d", [&] {
    upsample_kernel<scalar_t, false>(xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), N * C, H, W, scale);
  });
  Shape xs = x.shape();
  record("upsample_nearest2d", y, {x}, [=](const Tensor& g_in) {
    Tensor g = g_in.contiguous(), dx = empty(xs, g.dtype());
    LD_DISPATCH_FLOAT(g.dtype(), "upsample_nearest2d backward", [&] {
      upsample_kernel<scalar_t, true>(g.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), N * C, H, W, scale);
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace liandan
