#include "core/ops/composite.h"

#include <cmath>

#include "core/autocast.h"
#include "core/ops.h"

namespace liandan::composite {

namespace {

Shape last_dims(int64_t ndim, int64_t k) {
  Shape d;
  for (int64_t i = ndim - k; i < ndim; ++i) d.push_back(i);
  return d;
}

// Masked-out scores get this instead of −∞: exp underflows to exactly 0 beside any visible score, and a row
// with no visible key stays finite (its output is zeroed afterwards), where −∞ would give NaN.
constexpr double kMaskedScore = -1e30;

}  // namespace

Tensor layer_norm(const Tensor& x, int64_t k, const Tensor& weight, const Tensor& bias, double eps) {
  Shape dims = last_dims(x.dim(), k);
  Tensor xc = sub(x, mean(x, dims, true));
  Tensor y = mul(xc, rsqrt(add(mean(square(xc), dims, true), eps)));
  if (weight.defined()) y = mul(y, weight);
  if (bias.defined()) y = add(y, bias);
  return y;
}

Tensor rms_norm(const Tensor& x, int64_t k, const Tensor& weight, double eps) {
  Tensor y = mul(x, rsqrt(add(mean(square(x), last_dims(x.dim(), k), true), eps)));
  return weight.defined() ? mul(y, weight) : y;
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps) {
  int64_t N = x.size(0), C = x.size(1);
  Tensor xg = x.reshape({N, groups, -1});
  Tensor xc = sub(xg, mean(xg, {2}, true));
  Tensor y = mul(xc, rsqrt(add(mean(square(xc), {2}, true), eps))).reshape(x.shape());
  Shape affine(size_t(x.dim() - 1), 1);
  affine[0] = C;  // [C, 1, 1, ...] against [N, C, *]
  if (weight.defined()) y = mul(y, weight.reshape(affine));
  if (bias.defined()) y = add(y, bias.reshape(affine));
  return y;
}

Tensor rope(const Tensor& x, const Tensor& c, const Tensor& s, RopePairing pairing) {
  int64_t D = x.size(-1), P = c.size(-1);
  Tensor xa, xb;
  if (pairing == RopePairing::half) {
    xa = x.narrow(-1, 0, P);
    xb = x.narrow(-1, P, P);
  } else {
    Tensor xp = x.narrow(-1, 0, 2 * P);
    xa = xp.slice(-1, 0, 2 * P, 2);
    xb = xp.slice(-1, 1, 2 * P, 2);
  }
  Tensor ya = sub(mul(xa, c), mul(xb, s)), yb = add(mul(xa, s), mul(xb, c));
  Tensor rotated;
  if (pairing == RopePairing::half) {
    rotated = cat({ya, yb}, -1);
  } else {  // interleave back: [..., P, 2] -> [..., 2P]
    Shape sh = ya.shape();
    sh.back() = 2 * P;
    rotated = stack({ya, yb}, -1).reshape(sh);
  }
  return 2 * P == D ? rotated : cat({rotated, x.narrow(-1, 2 * P, D - 2 * P)}, -1);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  int64_t Tq = q.size(-2), Tk = k.size(-2);
  double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(q.size(-1)));
  Tensor scores = mul(matmul(q, k.transpose(-1, -2)), scale);  // [.., Tq, Tk]
  Tensor visible;  // 1 where query i may see key j, broadcastable to the scores
  if (opt.causal) {  // query i sits at absolute position Tk − Tq + i (a KV cache)
    std::vector<double> m(size_t(Tq * Tk));
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) m[size_t(i * Tk + j)] = j <= Tk - Tq + i ? 1.0 : 0.0;
    visible = from_vector(m, {Tq, Tk}, {q.dtype(), q.device()});
  }
  if (opt.key_valid.defined()) {
    Shape sh(size_t(q.dim()), 1);  // [B, 1, .., 1, Tk]
    sh[0] = q.size(0);
    sh.back() = Tk;
    Tensor kv = ne(opt.key_valid.to(q.device()).to(q.dtype()), zeros({}, {q.dtype(), q.device()})).reshape(sh);
    visible = visible.defined() ? mul(visible, kv) : kv;
  }
  if (visible.defined()) scores = add(scores, mul(rsub(visible, 1.0), kMaskedScore));
  Tensor out = matmul(softmax(scores, -1), v);
  if (visible.defined()) out = mul(out, gt(sum(visible, {-1}, true), 0.0));  // rows that see no key: 0
  return out;
}

Tensor causal_linear_attention(const Tensor& rq, const Tensor& rk, const Tensor& fq, const Tensor& fk, const Tensor& v) {
  int64_t T = rq.size(-2);
  std::vector<double> m(size_t(T * T));
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j <= i; ++j) m[size_t(i * T + j)] = 1.0;
  Tensor mask = from_vector(m, {T, T}, {rq.dtype(), rq.device()});
  Tensor num = matmul(mul(matmul(rq, rk.transpose(-1, -2)), mask), v);
  Tensor den = sum(mul(matmul(fq, fk.transpose(-1, -2)), mask), {-1}, true);
  return div(num, den);
}

namespace {
// The k·k windows of a padded [N, C, H, W] input as strided views, each [N, C, Ho, Wo], with one autograd node
// for all of them: the backward adds each window's gradient into one zeroed input gradient (a view per window),
// where a node per view would zero-fill and add a full-size gradient for each of the k·k windows.
std::vector<Tensor> windows(const Tensor& xp, int64_t kh, int64_t kw, int64_t stride, int64_t Ho, int64_t Wo) {
  auto view = [=](const Tensor& t, int64_t i, int64_t j) {
    return t.slice(2, i, i + (Ho - 1) * stride + 1, stride).slice(3, j, j + (Wo - 1) * stride + 1, stride);
  };
  std::vector<Tensor> w;
  {
    NoGradGuard ng;
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) w.push_back(view(xp, i, j));
  }
  TensorOptions o{xp.dtype(), xp.device()};
  record_multi("windows", w, {xp}, [=, shape = xp.shape()](const std::vector<Tensor>& g) {
    Tensor dx = zeros(shape, o);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        if (const Tensor& gk = g[size_t(i * kw + j)]; gk.defined()) view(dx, i, j).add_(gk);
    return std::vector<Tensor>{dx};
  });
  return w;
}
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups) {
  int64_t N = x.size(0), C = x.size(1), O = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  int64_t Ho = (x.size(2) + 2 * padding - kh) / stride + 1, Wo = (x.size(3) + 2 * padding - kw) / stride + 1;
  // The columns [N, C·kh·kw, L] -> [N, G, (C/G)·kh·kw, L], in the weight's (c, i, j) order; under autocast
  // written in the GEMM's format (the operand's cast done by unfold's pass). A 1x1 stride-1 convolution's
  // columns are the input itself.
  DType cd = autocast_operand_dtype(x.dtype());
  bool pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0 && cd == x.dtype();
  Tensor col = pointwise ? x.reshape({N, C, Ho * Wo}) : unfold(x, kh, kw, stride, padding, cd);
  col = col.reshape({N, groups, C / groups * kh * kw, Ho * Wo});
  Tensor wm = weight.reshape({groups, O / groups, C / groups * kh * kw});
  Tensor y = matmul(wm, col).reshape({N, O, Ho, Wo});  // [G, O/G, K] @ [N, G, K, L]
  return bias.defined() ? add(y, bias.reshape({O, 1, 1})) : y;
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  Tensor xp = padding ? pad(x, {padding, padding, padding, padding}) : x;
  int64_t Ho = (xp.size(2) - kernel) / stride + 1, Wo = (xp.size(3) - kernel) / stride + 1;
  Tensor acc;
  for (const Tensor& w : windows(xp, kernel, kernel, stride, Ho, Wo)) acc = acc.defined() ? add(acc, w) : w;
  return mul(acc, 1.0 / double(kernel * kernel));
}

Tensor upsample_nearest2d(const Tensor& x, int64_t scale) {
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  return x.reshape({N, C, H, 1, W, 1}).expand({N, C, H, scale, W, scale}).reshape({N, C, H * scale, W * scale});
}

Tensor one_hot(const Tensor& idx, int64_t n, TensorOptions opt) {
  LD_CHECK(idx.dtype() == DType::i64, "one_hot: indices must be i64, got ", dtype_name(idx.dtype()));
  // Class indices compare exactly in the float dtype up to its integer range.
  LD_CHECK(opt.dtype == DType::f64 || n <= (int64_t(1) << 24), "one_hot: ", n, " classes exceed f32's exact integers");
  Tensor f = idx.to(opt.device).to(opt.dtype).unsqueeze(-1);
  return eq(f, arange(0.0, double(n), 1.0, {opt.dtype, opt.device}));
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  int64_t d = wrap_dim(dim, x.dim(), "index_select");
  Autocast exact(DType::f32);  // a one-hot product is exact only in the input's own dtype
  Tensor idx = index.reshape({-1});
  Tensor xt = x.transpose(0, d);  // the selected dim first
  Shape rest(xt.shape().begin() + 1, xt.shape().end());
  Tensor rows = matmul(one_hot(idx, xt.size(0), {x.dtype(), x.device()}), xt.reshape({xt.size(0), -1}));
  Shape sh = rest;
  sh.insert(sh.begin(), idx.numel());
  return rows.reshape(sh).transpose(0, d);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  int64_t d = wrap_dim(dim, x.dim(), "gather");
  Autocast exact(DType::f32);  // a one-hot product is exact only in the input's own dtype
  for (int64_t i = 0; i < x.dim(); ++i)
    LD_CHECK(i == d || index.size(i) == x.size(i), "gather on ", x.device().str(), ": index ",
             shape_str(index.shape()), " must match input ", shape_str(x.shape()), " outside dim ", d);
  Tensor xt = x.transpose(d, -1), it = index.transpose(d, -1);                   // [.., n], [.., K]
  Tensor oh = one_hot(it, xt.size(-1), {x.dtype(), x.device()});                 // [.., K, n]
  return matmul(oh, xt.unsqueeze(-1)).squeeze(-1).transpose(d, -1);             // [.., K] -> back
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  Autocast exact(DType::f32);  // a one-hot product is exact only in the input's own dtype
  for (int64_t i = 0; i < x.dim(); ++i)
    LD_CHECK(i == d || index.size(i) == x.size(i), "scatter_add on ", x.device().str(), ": index ",
             shape_str(index.shape()), " must match input ", shape_str(x.shape()), " outside dim ", d);
  Tensor s = src;  // the part of src that index addresses
  for (int64_t i = 0; i < x.dim(); ++i) s = s.narrow(i, 0, index.size(i));
  Tensor st = s.transpose(d, -1).unsqueeze(-2), it = index.transpose(d, -1);  // [.., 1, K], [.., K]
  Tensor oh = one_hot(it, x.size(d), {x.dtype(), x.device()});               // [.., K, n]
  return add(x, matmul(st, oh).squeeze(-2).transpose(d, -1));                 // out[.., c] += Σ_k src[.., k]·[idx_k = c]
}

}  // namespace liandan::composite
