// matmul on OpenBLAS. A transposed operand (a view with unit stride along its rows) is passed to
// BLAS with the transpose flag instead of being copied; `x @ W` with a 2-D W folds all batch dims
// of x into one GEMM (the Linear-layer case). bf16/f16 operands (autocast, core/autocast.h) are multiplied
// with f32 accumulation into an f32 result (or, for autocast_matmul and the backward, the bf16/f16 one): bf16 by
// cpu::gemm_bf16 (AVX512-BF16 where the CPU has it), f16 widened to f32 and sgemm.

#include "core/autocast.h"
#include "core/cpu/blas.h"
#include "core/cpu/gemm_bf16.h"
#include "core/cpu/loops.h"
#include "core/device.h"
#include "core/ops.h"

namespace liandan {

namespace {

// How BLAS can read a strided 2-D matrix without copying it.
struct BlasView {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};

BlasView blas_view(int64_t rows, int64_t cols, int64_t srow, int64_t scol) {
  if (scol == 1 && (rows == 1 || srow >= std::max<int64_t>(cols, 1))) return {true, false, rows == 1 ? std::max<int64_t>(cols, 1) : srow};
  if (srow == 1 && (cols == 1 || scol >= std::max<int64_t>(rows, 1))) return {true, true, cols == 1 ? std::max<int64_t>(rows, 1) : scol};
  return {};
}

// Half operands give an f32 product (f32 accumulation, no rounding of the result), or with half_result the
// product rounded to their format.
DType result_dtype(DType in, bool half_result = false) { return is_half(in) && !half_result ? DType::f32 : in; }

// C[b] = A[b] @ B[b] for 3-D operands (batch dims already broadcast and flattened).
Tensor bmm_kernel(Tensor a, Tensor b, bool half_result) {
  int64_t batch = a.shape()[0], M = a.shape()[1], K = a.shape()[2], N = b.shape()[2];
  // f16 operands on the CPU: widened to f32 (exact), then sgemm; a half result is that product rounded, as the
  // GPU's epilogue rounds it. (bf16 ones take cpu::gemm_bf16 below.)
  if (a.dtype() == DType::f16 && a.device().is_cpu()) {
    DType h = a.dtype();
    Tensor c = bmm_kernel(a.to(DType::f32), b.to(DType::f32), false);
    return half_result ? c.to(h) : c;
  }
  half_result = half_result && is_half(a.dtype());
  BlasView va = blas_view(M, K, a.strides()[1], a.strides()[2]);
  BlasView vb = blas_view(K, N, b.strides()[1], b.strides()[2]);
  if (!va.ok) { a = a.contiguous(); va = blas_view(M, K, K, 1); }
  if (!vb.ok) { b = b.contiguous(); vb = blas_view(K, N, N, 1); }
  Tensor c = empty({batch, M, N}, {result_dtype(a.dtype(), half_result), a.device()});
  if (c.numel() == 0) return c;
  if (K == 0) return c.zero_();
  if (!a.device().is_cpu()) {
    device_backend(a.device()).gemm_batched(a.dtype(), va.trans, vb.trans, M, N, K, a.device_data(), va.ld,
                                            a.strides()[0], b.device_data(), vb.ld, b.strides()[0],
                                            c.device_data(), N, M * N, batch, half_result);
    return c;
  }
  // Many small products: one per thread (the GEMMs run single-threaded inside a parallel region). Few large ones:
  // one after another, each using all threads inside the GEMM.
  auto over_batch = [&](auto&& one) {
    if (batch > 1 && M * N * K < (int64_t(1) << 21)) {
      cpu::parallel_range(batch, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; ++i) one(i); },
                          std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, M * N * K)));
    } else {
      for (int64_t i = 0; i < batch; ++i) one(i);
    }
  };
  if (a.dtype() == DType::bf16) {  // bf16 operands, f32 accumulation (AVX512-BF16 where the CPU has it)
    auto pa = reinterpret_cast<const cpu::bf16_t*>(a.data_ptr<bfloat16>());
    auto pb = reinterpret_cast<const cpu::bf16_t*>(b.data_ptr<bfloat16>());
    const int64_t sa = a.strides()[0], sb = b.strides()[0];
    if (half_result) {
      auto pc = reinterpret_cast<cpu::bf16_t*>(c.data_ptr<bfloat16>());
      over_batch([&](int64_t i) {
        cpu::gemm_bf16(va.trans, vb.trans, M, N, K, 1.0f, pa + i * sa, va.ld, pb + i * sb, vb.ld, 0.0f,
                       pc + i * M * N, N);
      });
    } else {
      float* pc = c.data_ptr<float>();
      over_batch([&](int64_t i) {
        cpu::gemm_bf16(va.trans, vb.trans, M, N, K, 1.0f, pa + i * sa, va.ld, pb + i * sb, vb.ld, 0.0f,
                       pc + i * M * N, N);
      });
    }
    return c;
  }
  LD_DISPATCH_FLOAT(a.dtype(), "matmul", [&] {
    const scalar_t *pa = a.data_ptr<scalar_t>(), *pb = b.data_ptr<scalar_t>();
    scalar_t* pc = c.data_ptr<scalar_t>();
    int64_t sa = a.strides()[0], sb = b.strides()[0];
    auto one = [&](int64_t i) {
      cpu::gemm<scalar_t>(va.trans, vb.trans, M, N, K, scalar_t(1), pa + i * sa, va.ld, pb + i * sb, vb.ld,
                          scalar_t(0), pc + i * M * N, N);
    };
    over_batch(one);
  });
  return c;
}

// The shape of a @ b for operands of 2+ dims: the broadcast batch dims, then [M, N].
Shape matmul_shape(const Tensor& a, const Tensor& b) {
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape out = broadcast_shapes(ba, bb, "matmul (batch dims)");
  out.push_back(a.size(-2));
  out.push_back(b.size(-1));
  return out;
}

Tensor matmul_nd(const Tensor& a, const Tensor& b, bool half_result = false) {
  int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  LD_CHECK(b.size(-2) == K, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
           " cannot be multiplied (", K, " vs ", b.size(-2), ")");
  Shape out_shape = matmul_shape(a, b);
  Shape batch(out_shape.begin(), out_shape.end() - 2);
  // An empty result, or K = 0 (every element an empty sum): no GEMM, and no reshape of an empty
  // tensor (reshape({1, -1, 0}) cannot infer -1).
  if (shape_numel(out_shape) == 0 || K == 0) return zeros(out_shape, {result_dtype(a.dtype(), half_result), a.device()});
  // x[..., M, K] @ W[K, N]: fold the batch into M when x's rows are evenly spaced.
  if (b.dim() == 2 && a.dim() > 2) {
    Tensor a2 = a.is_contiguous() ? a : a.contiguous();
    Tensor c = bmm_kernel(a2.reshape({1, -1, K}), b.unsqueeze(0), half_result);
    return c.reshape(out_shape);
  }
  int64_t nb = shape_numel(batch);
  Shape ea = batch, eb = batch;
  ea.push_back(M); ea.push_back(K);
  eb.push_back(K); eb.push_back(N);
  // Broadcast batch dims are stride-0 views; flatten them when that is a view, else copy.
  auto to3 = [&](const Tensor& t, const Shape& full, int64_t r, int64_t c) {
    Tensor e = t.expand(full);
    if (full.size() == 2) return e.unsqueeze(0);
    // Batch dims collapse into one stride when they are uniformly spaced.
    const Shape& st = e.strides();
    size_t nbd = full.size() - 2;
    std::vector<size_t> varying;  // batch dims of size > 1
    for (size_t d = 0; d < nbd; ++d) if (full[d] != 1) varying.push_back(d);
    bool uniform = true;
    for (size_t i = 0; i + 1 < varying.size(); ++i)
      uniform &= st[varying[i]] == st[varying[i + 1]] * full[varying[i + 1]];
    if (uniform) {
      auto impl = std::make_shared<TensorImpl>(*e.impl());
      impl->grad_fn = nullptr;
      impl->requires_grad = false;
      impl->shape = {nb, r, c};
      impl->strides = {varying.empty() ? 0 : st[varying.back()], st[nbd], st[nbd + 1]};
      return Tensor(impl);
    }
    return e.contiguous().reshape({nb, r, c});
  };
  Tensor c = bmm_kernel(to3(a, ea, M, K), to3(b, eb, K, N), half_result);
  return c.reshape(out_shape);
}

// matmul and autocast_matmul; half_out: under autocast, the product in the half format (rounded by the GEMM).
Tensor matmul_op(const Tensor& a, const Tensor& b, bool half_out) {
  LD_CHECK(a.defined() && b.defined(), "matmul: undefined tensor argument");
  // Under autocast an f32 operand meets a half one (a half activation times an f32 weight): both go half.
  DType h = autocast_dtype();
  bool autocast_pair = h != DType::f32 && (a.dtype() == DType::f32 || a.dtype() == h) &&
                       (b.dtype() == DType::f32 || b.dtype() == h);
  LD_CHECK(a.dtype() == b.dtype() || autocast_pair, "matmul: dtype mismatch ", dtype_name(a.dtype()), " ",
           shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
  LD_CHECK(a.device() == b.device(), "matmul: device mismatch: ", a.device().str(), " ", shape_str(a.shape()),
           " vs ", b.device().str(), " ", shape_str(b.shape()));
  LD_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: both arguments need at least 1 dim, got ", shape_str(a.shape()),
           " and ", shape_str(b.shape()));
  // Checked here so that the message shows the caller's shapes, not the 1-D promoted ones.
  int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  LD_CHECK(ka == kb, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
           " cannot be multiplied (", ka, " vs ", kb, ")");
  // torch.matmul's 1-D rules: a vector is a row (left) or a column (right), removed from the result.
  // vector @ vector: [1, K] @ [K] is [1] already (the column was removed), so dim 0 goes.
  if (a.dim() == 1) return matmul_op(a.unsqueeze(0), b, half_out).squeeze(b.dim() == 1 ? 0 : -2);
  if (b.dim() == 1) return matmul_op(a, b.unsqueeze(-1), half_out).squeeze(-1);
  // Autocast: the operands are cast (differentiably: their gradients come back through the casts).
  if (autocast_pair && (a.dtype() == DType::f32 || b.dtype() == DType::f32))
    return matmul_op(a.to(h), b.to(h), half_out);
  Tensor c;
  {
    NoGradGuard ng;
    c = matmul_nd(a.detach(), b.detach(), half_out);
  }
  if (needs_grad({&a, &b})) {
    SavedTensor sa(a, "matmul"), sb(b, "matmul");
    bool ga = a.requires_grad(), gb = b.requires_grad();
    Shape as = a.shape(), bs = b.shape();
    record("matmul", c, {a, b}, [=](const Tensor& g_out) {
      const Tensor &av = sa.get(), &bv = sb.get();
      // The backward GEMMs take the forward's operand format (half under autocast: the incoming f32
      // gradient is rounded, as PyTorch's bf16 GEMM output would be) whatever autocast says now, and
      // each gradient is returned in its input's dtype.
      Autocast same_as_forward(DType::f32);
      Tensor g = g_out.to(av.dtype());
      // x @ y as the gradient of shape `want` in dtype dt: a half gradient straight from the GEMM (its epilogue
      // rounds) unless batch dims must be summed first.
      auto grad = [](const Tensor& x, const Tensor& y, const Shape& want, DType dt) {
        if (matmul_shape(x, y) == want) return matmul_nd(x, y, true).to(dt);
        return sum_to(matmul_nd(x, y), want).to(dt);
      };
      Tensor da, db;
      if (ga) da = grad(g, bv.transpose(-1, -2), as, av.dtype());
      if (gb) {
        if (bs.size() == 2 && as.size() > 2)  // Linear case: one GEMM over all rows
          db = av.numel() == 0 ? zeros(bs, {bv.dtype(), g.device()})  // no rows, or K = 0: reshape({-1, 0}) is ambiguous
                               : grad(av.reshape({-1, as.back()}).t(), g.reshape({-1, bs.back()}), bs, bv.dtype());
        else
          db = grad(av.transpose(-1, -2), g, bs, bv.dtype());
      }
      return std::vector<Tensor>{da, db};
    });
  }
  return c;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) { return matmul_op(a, b, false); }
Tensor autocast_matmul(const Tensor& a, const Tensor& b) { return matmul_op(a, b, true); }

}  // namespace liandan
