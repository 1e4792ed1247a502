// conv2d and unfold: the op — checks, autograd, autocast, the device path (implicit GEMM under autocast on a GPU,
// im2col + batched GEMM otherwise). Its CPU kernels (direct 3x3/1x1, and im2col + GEMM for the rest) are
// core/cpu/conv.{h,cpp}; pooling and upsampling are core/ops/pool.cpp.
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
#include "core/cpu/conv.h"

namespace liandan {

namespace {

using cpu::conv_backward;
using cpu::conv_forward;
using cpu::col2im;
using cpu::ConvGeom;
using cpu::direct_backward;
using cpu::direct_forward;
using cpu::direct_path;
using cpu::im2col;
using cpu::work_grain;

// ---------------------------------------------------------------- conv2d on a device (groups = 1)
// im2col + cuBLAS, with the columns laid out [K, N·L] (K = C·kh·kw rows, the N images' L = Ho·Wo pixels side by
// side) in the GEMM's format (bf16/f16 under autocast, rounded by the im2col pass):
//   forward   y[n] = W @ col[:, n]            one strided-batched GEMM (col read with leading dim N·L), NCHW out
//   backward  dy' = dy as [O, N·L]            one transposing copy, in the GEMM's format (its operand cast)
//             dW = Σ_chunks dy'[:, c] @ col[:, c]ᵀ, dcol = Wᵀ @ dy', dx = col2im(dcol)
// The bias rides in the GEMMs: the columns get a row of ones (and zero rows up to a multiple of 8, so that the
// weight's rows stay 16-byte aligned for the tensor cores), the weight matrix the bias as that column — so y needs
// no bias pass, and db is that column of dW (no reduction over dy). Under autocast the bias is then rounded to the
// half format, as in PyTorch's autocast convolution.
// The weight gradient is a reduction over all N·L pixels. Per image (batched, then summed over images) it would
// write N partial [O, K] products — at 8×8 pixels and 256 channels 40× the activation's size; one GEMM with K =
// N·L has too few output tiles to fill a GPU. So it runs as a few image chunks (a GEMM each, batched) whose
// partials are summed in chunk order: deterministic, and the partials stay smaller than the activation.
// The kernel table's geometry of g's im2col (with extra_rows after the C·kh·kw rows: see ConvShape).
ConvShape conv_shape(const ConvGeom& g, int64_t extra_rows = 0) {
  return {g.N, g.C, g.H, g.W, g.kh, g.kw, g.stride, g.pad, g.Ho, g.Wo, extra_rows};
}

int64_t weight_grad_chunks(int64_t N, int64_t L, int64_t K) {
  int64_t cap = std::clamp<int64_t>(N * L / std::max<int64_t>(K, 1024), 1, 32);
  int64_t c = cap;
  while (N % c != 0) --c;  // chunks of whole images
  return c;
}

// The device convolutions' shared backward steps. dy as [O, N·L] in the GEMM's format (its operand cast rides on
// the transposing copy):
Tensor transposed_dy(const Tensor& dy, const ConvGeom& g, DType gd) {
  Tensor dyt = empty({g.O, g.N, g.Ho * g.Wo}, {gd, dy.device()});
  dyt.copy_(dy.reshape({g.N, g.O, g.Ho * g.Wo}).permute({1, 0, 2}));
  return dyt;
}
// dx = col2im(W[:, :K]ᵀ @ dyt), W's rows ld_w apart.
Tensor input_grad_by_col2im(DeviceBackend& dev, const Tensor& dyt, const Tensor& w, int64_t ld_w, const ConvGeom& g,
                            DType gd, DType xd) {
  const int64_t K = g.C * g.kh * g.kw, NL = g.N * g.Ho * g.Wo;
  Tensor dcol = empty({K, g.N, g.Ho * g.Wo}, {gd, dyt.device()});
  dev.gemm_batched(gd, true, false, K, NL, g.O, w.device_data(), ld_w, 0, dyt.device_data(), NL, 0,
                   dcol.device_data(), NL, 0, 1, true);
  Tensor dx = empty({g.N, g.C, g.H, g.W}, {xd, dyt.device()});
  dev.col2im(dcol.permute({1, 0, 2}), dx, conv_shape(g));
  return dx;
}
// dW and db out of the per-chunk partials [chunks, O, Kt] of [dW | db | ·] (summed in chunk order).
void weight_and_bias_grads(const Tensor& part, int64_t K, bool gw, bool gb, const Shape& ws, DType wd, Tensor& dw,
                           Tensor& db) {
  Tensor full = part.size(0) == 1 ? part.reshape({part.size(1), part.size(2)}) : sum(part, {0});
  if (gw) dw = (full.size(1) == K ? full : full.narrow(1, 0, K)).to(wd).contiguous().reshape(ws);
  if (gb) db = full.select(1, K).to(wd).contiguous();
}

// Under autocast (half GEMM operands): the implicit GEMM (DeviceBackend::conv_implicit), which gathers the columns
// from the image tile by tile on the tensor cores instead of writing them — for a 3×3 convolution the column matrix
// is 9× the input, written once and read once or twice (forward, weight gradient) by the explicit form. The backward
// saves x, not the columns: dW (with db as the ones row's column) gathers them again; dx is the forward kernel on dy
// with the weights flipped and transposed (stride 1, a square kernel, pad < k), else dcol = Wᵀ·dy + col2im.
Tensor conv2d_implicit(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeom& g, DType gd) {
  const int64_t K = g.C * g.kh * g.kw, L = g.Ho * g.Wo;
  DeviceBackend& dev = device_backend(x.device());
  // the weights [O, K] in the operand format (the kernel rounds the bias to it, as in the GEMM form)
  Tensor wm = weight.detach().reshape({g.O, K}).to(gd).contiguous();
  Tensor y = empty({g.N, g.O, g.Ho, g.Wo}, {weight.dtype(), x.device()});
  LD_CHECK(dev.conv_implicit(x, wm, bias.defined() ? bias.detach().contiguous() : Tensor(), y, conv_shape(g)),
           "conv2d: the device refused its implicit GEMM");
  if (!needs_grad({&x, &weight, &bias})) return y;
  SavedTensor sx(x, "conv2d"), sw(wm, "conv2d");
  bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  Shape ws = weight.shape();
  DType xd = x.dtype(), wd = weight.dtype();
  record("conv2d", y, {x, weight, bias}, [=, &dev](const Tensor& dy_in) {
    const Tensor &xv = sx.get(), &wv = sw.get();
    Tensor dy = dy_in.contiguous(), dx, dw, db;
    if (gw || gb) {  // [dW | db] per pixel chunk, the bias's column from the ones row; summed in chunk order
      const int64_t Kt = gb ? K + 1 : K, chunks = weight_grad_chunks(g.N, L, Kt);
      Tensor part = empty({chunks, g.O, Kt}, {DType::f32, dy.device()});
      LD_CHECK(dev.conv_implicit_weight_grad(dy, xv, part, conv_shape(g, Kt - K), gd),
               "conv2d: the device refused its implicit weight gradient");
      weight_and_bias_grads(part, K, gw, gb, ws, wd, dw, db);
    }
    if (gx) {
      if (g.stride == 1 && g.kh == g.kw && g.pad < g.kh) {
        dx = empty({g.N, g.C, g.H, g.W}, {xd, dy.device()});
        // dx = conv(dy, W') with W'[c, o, i, j] = W[o, c, kh−1−i, kw−1−j] (read so by the kernel: adjoint) and
        // padding kh − 1 − pad
        ConvShape ds{g.N, g.O, g.Ho, g.Wo, g.kh, g.kw, 1, g.kh - 1 - g.pad, g.H, g.W};
        LD_CHECK(dev.conv_implicit(dy, wv, Tensor(), dx, ds, true), "conv2d: the device refused its implicit dx");
      } else {
        dx = input_grad_by_col2im(dev, transposed_dy(dy, g, gd), wv, K, g, gd, xd);
      }
    }
    return std::vector<Tensor>{dx, dw, db};
  });
  return y;
}

Tensor conv2d_device(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeom& g) {
  const DType gd = autocast_operand_dtype(x.dtype());  // the GEMMs' operand format
  if (is_half(gd) && (x.dtype() == DType::f32 || x.dtype() == gd) && weight.dtype() == DType::f32)
    return conv2d_implicit(x, weight, bias, g, gd);
  const int64_t K = g.C * g.kh * g.kw, L = g.Ho * g.Wo, NL = g.N * L;
  const int64_t Kt = bias.defined() ? (K + 1 + 7) / 8 * 8 : K;  // the GEMMs' K: + the bias's row, padded
  const ConvShape cs = conv_shape(g, Kt - K);
  DeviceBackend& dev = device_backend(x.device());
  TensorOptions og{gd, x.device()};
  Tensor col = empty({Kt, g.N, L}, og), wm;  // wm: [O, Kt] = [W | b | 0]
  {
    NoGradGuard ng;
    if (bias.defined()) {
      wm = zeros({g.O, Kt}, og);
      wm.narrow(1, 0, K).copy_(weight.detach().reshape({g.O, K}));
      wm.select(1, K).copy_(bias.detach());
    } else {
      wm = weight.detach().to(gd).contiguous();
    }
  }
  Tensor y = empty({g.N, g.O, g.Ho, g.Wo}, {weight.dtype(), x.device()});  // f32 also for a half x
  dev.im2col(x, col.permute({1, 0, 2}), cs);
  // y[n] [O, L] = wm [O, Kt] @ col[:, n] [Kt, L]
  dev.gemm_batched(gd, false, false, g.O, L, Kt, wm.device_data(), Kt, 0, col.device_data(), NL, L, y.device_data(),
                   L, g.O * L, g.N, false);
  if (!needs_grad({&x, &weight, &bias})) return y;
  SavedTensor scol(col, "conv2d"), sw(wm, "conv2d");
  bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  Shape ws = weight.shape();
  DType xd = x.dtype(), wd = weight.dtype();
  record("conv2d", y, {x, weight, bias}, [=, &dev](const Tensor& dy) {
    const Tensor &colv = scol.get(), &wv = sw.get();
    Tensor dyt = transposed_dy(dy, g, gd), dx, dw, db;
    if (gw || gb) {  // [dW | db | ·] in one GEMM (f32 sums, half operands or not)
      int64_t chunks = weight_grad_chunks(g.N, L, Kt), len = NL / chunks;
      Tensor part = empty({chunks, g.O, Kt}, {wd, dy.device()});
      dev.gemm_batched(gd, false, true, g.O, Kt, len, dyt.device_data(), NL, len, colv.device_data(), NL, len,
                       part.device_data(), Kt, g.O * Kt, chunks, false);
      weight_and_bias_grads(part, K, gw, gb, ws, wd, dw, db);
    }
    if (gx) dx = input_grad_by_col2im(dev, dyt, wv, Kt, g, gd, xd);
    return std::vector<Tensor>{dx, dw, db};
  });
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups) {
  LD_CHECK(x.defined() && x.dim() == 4, "conv2d: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(weight.defined() && weight.dim() == 4, "conv2d: expected weight [O, C/groups, kh, kw], got ",
           weight.defined() ? shape_str(weight.shape()) : "undefined");
  // (under autocast the input may come in the autocast format: a norm's half output, the GEMM's operand already)
  LD_CHECK(x.dtype() == weight.dtype() ||
               (is_half(x.dtype()) && x.dtype() == autocast_dtype() && weight.dtype() == DType::f32),
           "conv2d: dtype mismatch input ", dtype_name(x.dtype()), " vs weight ", dtype_name(weight.dtype()));
  LD_CHECK(stride >= 1 && padding >= 0 && groups >= 1, "conv2d: bad stride ", stride, ", padding ", padding,
           " or groups ", groups);
  ConvGeom g{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], weight.shape()[0], weight.shape()[2],
             weight.shape()[3], stride, padding, groups, 0, 0};
  LD_CHECK(g.C % groups == 0 && g.O % groups == 0 && weight.shape()[1] == g.C / groups, "conv2d: input ",
           shape_str(x.shape()), " and weight ", shape_str(weight.shape()), " do not match with groups=", groups,
           " (weight dim 1 must be C/groups = ", g.C / groups, ")");
  if (bias.defined())
    LD_CHECK(bias.shape() == Shape{g.O} && bias.dtype() == weight.dtype(), "conv2d: bias must be [", g.O, "] ",
             dtype_name(weight.dtype()), ", got ", shape_str(bias.shape()));
  g.Ho = (g.H + 2 * padding - g.kh) / stride + 1;
  g.Wo = (g.W + 2 * padding - g.kw) / stride + 1;
  LD_CHECK(g.H + 2 * padding >= g.kh && g.W + 2 * padding >= g.kw, "conv2d: kernel ", g.kh, "x", g.kw,
           " larger than padded input ", g.H + 2 * padding, "x", g.W + 2 * padding);
  // (empty shapes take the composite: no GEMM of zero size goes to cuBLAS)
  if (!x.device().is_cpu() && groups == 1 && g.N * g.C * g.O * g.Ho * g.Wo > 0) return conv2d_device(x, weight, bias, g);
  // CPU autocast: a convolution the direct kernels take (3x3 and 1x1, stride 1) stays in f32 — on the CPU they beat
  // the half unfold + GEMM composite at the U-Net's 32-128 channels (unet_ddpm_bf16: 1634 -> see docs/benchmarks.md),
  // and f32 operands lose nothing; a half input (a norm's autocast output) is widened first. Others take the
  // composite in the half format, as on a GPU.
  const bool fast = direct_path(g);
  if (!x.device().is_cpu() || (autocast_enabled() && !fast))
    return composite::conv2d(x, weight, bias, stride, padding, groups);
  const Tensor xin = x.dtype() == weight.dtype() ? x : x.to(weight.dtype());
  Tensor xc = xin.contiguous(), wc = weight.contiguous(), bc = bias.defined() ? bias.contiguous() : bias;
  Tensor y = empty({g.N, g.O, g.Ho, g.Wo}, xin.dtype());
  LD_DISPATCH_FLOAT(xin.dtype(), "conv2d", [&] {
    const scalar_t* b = bc.defined() ? bc.data_ptr<scalar_t>() : nullptr;
    if (fast)
      direct_forward<scalar_t>(g, xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>(), xin.dtype());
    else conv_forward(g, xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>());
  });
  if (needs_grad({&xin, &weight, &bias})) {
    SavedTensor sx(xc, "conv2d"), sw(wc, "conv2d");
    bool gx = xin.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record("conv2d", y, {xin, weight, bias}, [=](const Tensor& g_in) {
      Tensor dy = g_in.contiguous();
      const Tensor &xv = sx.get(), &wv = sw.get();
      Tensor dx = gx ? empty(xv.shape(), dy.dtype()) : Tensor(), dw = gw ? empty(wv.shape(), dy.dtype()) : Tensor(),
             db = gb ? empty({g.O}, dy.dtype()) : Tensor();
      LD_DISPATCH_FLOAT(dy.dtype(), "conv2d backward", [&] {
        auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
        if (fast)
          direct_backward<scalar_t>(g, xv.data_ptr<scalar_t>(), wv.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                    ptr(dx), ptr(dw), ptr(db), dy.dtype());
        else
          conv_backward<scalar_t>(g, xv.data_ptr<scalar_t>(), wv.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                  ptr(dx), ptr(dw), ptr(db));
      });
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

// ---------------------------------------------------------------- unfold (im2col)
// The column matrix as an op of its own: conv2d on a GPU and under autocast is unfold + one batched GEMM
// (composite::conv2d), and unfold's backward is col2im — one pass each way, where the strided-view form (pad,
// k·k window copies and a stack; a zero-filled gradient and k·k adds back) made 2k² + 2 passes.
Tensor unfold(const Tensor& x, int64_t kh, int64_t kw, int64_t stride, int64_t padding, DType dtype) {
  LD_CHECK(x.defined() && x.dim() == 4, "unfold: expected input [N, C, H, W], got ",
           x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(is_floating(x.dtype()) && is_floating(dtype), "unfold: expected floating dtypes, got input ",
           dtype_name(x.dtype()), " and columns ", dtype_name(dtype));
  LD_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && padding >= 0, "unfold: bad kernel ", kh, "x", kw, ", stride ", stride,
           " or padding ", padding);
  ConvGeom g{x.size(0), x.size(1), x.size(2), x.size(3), 0, kh, kw, stride, padding, 1, 0, 0};
  LD_CHECK(g.H + 2 * padding >= kh && g.W + 2 * padding >= kw, "unfold: kernel ", kh, "x", kw,
           " larger than padded input ", shape_str(x.shape()), " with padding ", padding);
  g.Ho = (g.H + 2 * padding - kh) / stride + 1;
  g.Wo = (g.W + 2 * padding - kw) / stride + 1;
  const ConvShape cs = conv_shape(g);
  const int64_t K = g.C * kh * kw, L = g.Ho * g.Wo;
  Tensor col = empty({g.N, K, L}, {dtype, x.device()});
  // The CPU computes in x's dtype (a half x widened: exact) and rounds the columns after: the same numbers.
  const DType work = is_half(x.dtype()) ? DType::f32 : x.dtype();
  if (!x.device().is_cpu()) {
    device_backend(x.device()).im2col(x, col, cs);
  } else {
    NoGradGuard ng;
    Tensor xc = x.to(work).contiguous(), cw = dtype == work ? col : empty(col.shape(), work);
    LD_DISPATCH_FLOAT(work, "unfold", [&] {
      const scalar_t* px = xc.data_ptr<scalar_t>();
      scalar_t* pc = cw.data_ptr<scalar_t>();
      cpu::parallel_range(g.N, [&](int64_t b, int64_t e) {
        for (int64_t n = b; n < e; ++n) im2col(g, px + n * g.C * g.H * g.W, pc + n * K * L, L);
      }, work_grain(K * L));
    });
    if (dtype != work) col.copy_(cw);
  }
  Shape xs = x.shape();
  DType xd = x.dtype();
  record("unfold", col, {x}, [=](const Tensor& g_in) {
    Tensor dcol = g_in.contiguous(), dx;
    if (!dcol.device().is_cpu()) {
      dx = empty(xs, {xd, dcol.device()});
      device_backend(dcol.device()).col2im(dcol, dx, cs);
    } else {  // col2im in the working dtype over a zeroed dx, image by image; a half dx rounded after
      Tensor dc = dcol.to(work).contiguous();
      dx = zeros(xs, work);
      LD_DISPATCH_FLOAT(work, "unfold backward", [&] {
        const scalar_t* pc = dc.data_ptr<scalar_t>();
        scalar_t* pd = dx.data_ptr<scalar_t>();
        cpu::parallel_range(g.N, [&](int64_t b, int64_t e) {
          for (int64_t n = b; n < e; ++n) col2im(g, pc + n * K * L, pd + n * g.C * g.H * g.W, L);
        }, work_grain(K * L));
      });
      dx = dx.to(xd);
    }
    return std::vector<Tensor>{dx};
  });
  return col;
}

Tensor unfold(const Tensor& x, int64_t kh, int64_t kw, int64_t stride, int64_t padding) {
  LD_CHECK(x.defined(), "unfold: undefined input");
  return unfold(x, kh, kw, stride, padding, x.dtype());
}

}  // namespace liandan
