// ZLPR ("multilabel categorical crossentropy", kexue.fm/archives/7359 and 9064), its sparse form, and
// the two "n m-way classifications" losses of kexue.fm/archives/9158. Math: shared/docs/seeds-math.md
// §3-§4, algorithms.md §2.
//
// zlpr / zlpr_soft run a fused row kernel: per row of C logits, pass 1 writes the two exponent
// sets a_i = s_i + log(1 - t_i) and b_i = -s_i + log t_i (-inf for entries outside a set), pass 2
// finds their maxima (each including the appended 0 logit), pass 3 exponentiates and sums them, and
// pass 4 (only when a gradient is needed) turns them into the gradient
//     dL/ds_i = e^{a_i - lse_a} - e^{b_i - lse_b},
// which the backward just scales by the incoming gradient, in place. The row stays in L1 across the
// passes, so forward+backward reads the logits once and writes the gradient once; the composite
// (zlpr_composite: where, cat, logsumexp and their backward) makes about twenty passes over memory.
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "losses/kernels.h"
#include "losses/losses.h"

namespace liandan::losses {

LD_DEFINE_KERNEL(zlpr_rows);  // losses/kernels.h; CUDA's in losses/zlpr.cu

namespace {

constexpr double kMaskedLogit = -1e11;  // logits <= this are invalid (bert4keras: -INF/10, INF = 1e12)
constexpr double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------------------ fused row kernels
// Each pass is its own function over __restrict pointers with selects only (no branches), so GCC
// vectorizes it; sums and maxima use cpu::kLanes fixed lanes, so results do not depend on threads.
// Pass 1 differs between hard and soft targets; passes 2 and 3 are shared, so on 0/1 targets the
// two losses and their gradients are equal bit for bit (pass 1 then yields the same exponents).

// Pass 1, hard: A_i = s_i on negatives, B_i = -s_i on positives, -inf elsewhere and on invalid
// (masked) logits. NaN logits count as valid, so they propagate into the loss. Returns non-zero
// when a target is not 0 or 1.
template <class T>
int hard_exponents(const T* __restrict s, const T* __restrict t, T* __restrict A, T* __restrict B, int64_t C) {
  const T ninf = -std::numeric_limits<T>::infinity();
  int bad = 0;
  for (int64_t k = 0; k < C; ++k) {
    T si = s[k], ti = t[k];
    bool pos = ti != T(0), val = !(si <= T(kMaskedLogit));
    bad |= int(ti != T(0)) & int(ti != T(1));
    A[k] = (val && !pos) ? si : ninf;
    B[k] = (val && pos) ? -si : ninf;
  }
  return bad;
}

// Pass 1, soft: A_i = s_i + log(1 - t_i) unless t_i counts as 1, B_i = -s_i + log t_i unless t_i
// counts as 0 (t < eps -> 0, t > 1 - eps -> 1: the article's masking fix). Returns non-zero when a
// target is outside [0, 1] (or NaN).
template <class T>
int soft_exponents(const T* __restrict s, const T* __restrict t, T* __restrict A, T* __restrict B, int64_t C, T eps) {
  const T ninf = -std::numeric_limits<T>::infinity();
  int bad = 0;
  for (int64_t k = 0; k < C; ++k) {
    T si = s[k], ti = t[k];
    bad |= int(!(ti >= T(0) && ti <= T(1)));
    T tq = ti < eps ? T(0) : ti > T(1) - eps ? T(1) : ti;
    bool val = !(si <= T(kMaskedLogit));
    A[k] = (val && tq < T(1)) ? si + std::log1p(-tq) : ninf;
    B[k] = (val && tq > T(0)) ? -si + std::log(tq) : ninf;
  }
  return bad;
}

// max(0, max_i A_i) and the same for B: the appended 0 logit bounds both from below (NaN skipped).
template <class T>
void lane_max0(const T* __restrict A, const T* __restrict B, int64_t n, T& ma, T& mb) {
  constexpr int L = cpu::kLanes;
  T la[L], lb[L];
  for (int j = 0; j < L; ++j) la[j] = lb[j] = T(0);
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) {
      la[j] = A[i + j] > la[j] ? A[i + j] : la[j];
      lb[j] = B[i + j] > lb[j] ? B[i + j] : lb[j];
    }
  for (; i < n; ++i) {
    la[0] = A[i] > la[0] ? A[i] : la[0];
    lb[0] = B[i] > lb[0] ? B[i] : lb[0];
  }
  ma = la[0], mb = lb[0];
  for (int j = 1; j < L; ++j) {
    ma = la[j] > ma ? la[j] : ma;
    mb = lb[j] > mb ? lb[j] : mb;
  }
}

// Pass 2: A_i <- e^{A_i - ma}, B_i <- e^{B_i - mb} (in place); returns the sums, each with the
// appended 0 logit's e^{-m}.
template <class T>
void exp_sums(T* __restrict A, T* __restrict B, int64_t n, T ma, T mb, T& Sa, T& Sb) {
  constexpr int L = cpu::kLanes;
  T sa[L] = {}, sb[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) {
      T ea = cpu::vexp(A[i + j] - ma), eb = cpu::vexp(B[i + j] - mb);
      A[i + j] = ea;
      B[i + j] = eb;
      sa[j] += ea;
      sb[j] += eb;
    }
  for (; i < n; ++i) {
    T ea = cpu::vexp(A[i] - ma), eb = cpu::vexp(B[i] - mb);
    A[i] = ea;
    B[i] = eb;
    sa[0] += ea;
    sb[0] += eb;
  }
  Sa = cpu::lanes_total(sa) + std::exp(-ma);
  Sb = cpu::lanes_total(sb) + std::exp(-mb);
}

// Pass 3: g_i = e^{a_i - lse_a} - e^{b_i - lse_b}, with g holding the A exponentials on entry.
template <class T>
void grad_row(T* __restrict g, const T* __restrict B, int64_t n, T ia, T ib) {
  for (int64_t k = 0; k < n; ++k) g[k] = g[k] * ia - B[k] * ib;
}

// One row: the loss, and the gradient into g when g is not null. A, B: scratch rows of C (A is
// not used when g is given: g serves as A).
template <class T>
T zlpr_row(const T* s, const T* t, T* g, T* A, T* B, int64_t C, bool soft, T eps, bool& bad) {
  T* a = g ? g : A;
  if (soft ? soft_exponents(s, t, a, B, C, eps) : hard_exponents(s, t, a, B, C)) bad = true;
  T ma, mb, Sa, Sb;
  lane_max0(a, B, C, ma, mb);
  exp_sums(a, B, C, ma, mb, Sa, Sb);
  if (g) grad_row(g, B, C, T(1) / Sa, T(1) / Sb);
  return (ma + std::log(Sa)) + (mb + std::log(Sb));
}

void check_logits(const Tensor& x, const char* op) {
  LD_CHECK(x.defined(), op, ": logits are undefined");
  LD_CHECK(is_floating(x.dtype()), op, ": logits must be f32 or f64, got ", dtype_name(x.dtype()));
  LD_CHECK(x.dim() >= 1, op, ": logits must have at least 1 dim (the labels), got shape ", shape_str(x.shape()));
}

Tensor prepared_targets(const Tensor& logits, const Tensor& targets, const char* op) {
  LD_CHECK(targets.defined(), op, ": targets are undefined");
  LD_CHECK(targets.shape() == logits.shape(), op, ": logits ", shape_str(logits.shape()), " and targets ",
           shape_str(targets.shape()), " must have the same shape");
  Tensor t = targets.detach();
  return t.dtype() == logits.dtype() ? t : t.to(logits.dtype());
}

std::string index_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    idx[size_t(d)] = shape[size_t(d)] ? flat % shape[size_t(d)] : 0;
    flat = shape[size_t(d)] ? flat / shape[size_t(d)] : 0;
  }
  return shape_str(idx);
}

// Throws naming the first target that fails `ok`.
template <class Ok>
void report_bad_target(const Tensor& tc, const Shape& shape, const char* op, const char* what, Ok ok) {
  std::vector<double> v = tc.to_vector();
  for (size_t k = 0; k < v.size(); ++k)
    if (!ok(v[k])) LD_FAIL(op, ": ", what, ", got ", v[k], " at index ", index_str(int64_t(k), shape), " (targets ",
                           shape_str(shape), ")");
  LD_FAIL(op, ": ", what);
}

Tensor zlpr_fused(const Tensor& logits, const Tensor& targets, bool soft, double eps) {
  const char* op = soft ? "zlpr_soft" : "zlpr";
  check_logits(logits, op);
  if (soft) LD_CHECK(eps >= 0 && eps < 0.5, op, ": eps must be in [0, 0.5), got ", eps);
  Tensor t = prepared_targets(logits, targets, op);
  Tensor xc = logits.contiguous(), tc = t.contiguous();
  int64_t C = logits.shape().back();
  Shape batch(logits.shape().begin(), logits.shape().end() - 1);
  int64_t R = shape_numel(batch);
  bool grad = needs_grad({&logits});
  Device dev = logits.device();
  TensorOptions o{logits.dtype(), dev};
  Tensor loss = empty(batch, o);
  Tensor G = grad ? empty({R, C}, o) : Tensor();
  std::atomic<bool> bad{false};
  if (!dev.is_cpu()) {  // the same row kernel on the device (losses/zlpr.cu); one flag read back
    if (tc.device() != dev) tc = tc.to(dev);
    Tensor flag = zeros({}, {DType::i64, dev});
    zlpr_rows(dev, xc, tc, loss, G, R, C, soft, eps, flag);
    bad = flag.item() != 0;
  } else LD_DISPATCH_FLOAT(logits.dtype(), op, [&] {
    const scalar_t *ps = xc.data_ptr<scalar_t>(), *pt = tc.data_ptr<scalar_t>();
    scalar_t* pl = loss.data_ptr<scalar_t>();
    scalar_t* pg = grad ? G.data_ptr<scalar_t>() : nullptr;
    cpu::parallel_range(R, [&](int64_t b, int64_t e) {
      bool lbad = false;
      std::vector<scalar_t> A(pg ? 0 : static_cast<size_t>(C)), B(static_cast<size_t>(C));
      for (int64_t r = b; r < e; ++r)
        pl[r] = zlpr_row(ps + r * C, pt + r * C, pg ? pg + r * C : nullptr, A.data(), B.data(), C, soft,
                         scalar_t(eps), lbad);
      if (lbad) bad = true;
    }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, C)));
  });
  if (bad) {
    if (soft) report_bad_target(tc, t.shape(), op, "soft targets must be in [0, 1]", [](double v) { return v >= 0 && v <= 1; });
    report_bad_target(tc, t.shape(), op, "hard targets must be 0 or 1 (use zlpr_soft for soft labels)",
                      [](double v) { return v == 0 || v == 1; });
  }
  if (grad) {
    Shape xs = logits.shape();
    record(op, loss, {logits}, [G, xs, R, C](const Tensor& gout) {
      if (!G.device().is_cpu()) return std::vector<Tensor>{mul(G, gout.reshape({R, 1})).view(xs)};
      // G is this node's own buffer and the closure runs once: scale it in place into the gradient.
      Tensor gc = gout.contiguous();
      LD_DISPATCH_FLOAT(G.dtype(), "zlpr backward", [&] {
        scalar_t* pg = G.data_ptr<scalar_t>();
        const scalar_t* po = gc.data_ptr<scalar_t>();
        cpu::parallel_range(R, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r) {
            scalar_t w = po[r];
            scalar_t* row = pg + r * C;
            for (int64_t k = 0; k < C; ++k) row[k] *= w;
          }
        }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, C)));
      });
      return std::vector<Tensor>{G.view(xs)};
    });
  }
  return loss;
}

// ------------------------------------------------------------------------------ composite reference

// Targets mapped by the masking fix (t < eps -> 0, t > 1 - eps -> 1), validated.
Tensor masked_targets(const Tensor& t, bool soft, double eps, const char* op) {
  Tensor tc = t.contiguous().to(DType::f64);
  std::vector<double> v = tc.to_vector();
  for (size_t k = 0; k < v.size(); ++k) {
    double x = v[k];
    if (soft) {
      if (!(x >= 0 && x <= 1)) report_bad_target(tc, t.shape(), op, "soft targets must be in [0, 1]", [](double u) { return u >= 0 && u <= 1; });
      v[k] = x < eps ? 0.0 : x > 1 - eps ? 1.0 : x;
    } else if (x != 0 && x != 1) {
      report_bad_target(tc, t.shape(), op, "hard targets must be 0 or 1 (use zlpr_soft for soft labels)",
                        [](double u) { return u == 0 || u == 1; });
    }
  }
  return from_vector(v, t.shape(), t.dtype()).to(t.device());
}

Tensor zlpr_composite_impl(const Tensor& logits, const Tensor& targets, bool soft, double eps) {
  const char* op = soft ? "zlpr_soft" : "zlpr";
  check_logits(logits, op);
  TensorOptions o{logits.dtype(), logits.device()};
  Tensor tq = masked_targets(prepared_targets(logits, targets, op).to(logits.device()), soft, eps, op);
  Tensor valid = rsub(le(logits.detach(), full({}, kMaskedLogit, o)), 1.0);
  Tensor nmask = mul(valid, lt(tq, 1.0)), pmask = mul(valid, gt(tq, 0.0));
  Tensor zero = zeros({}, o), ninf = full({}, -kInf, o);
  // log(1 - t) and log t where the entry is in the set (finite there), 0 elsewhere.
  Tensor l1mt = where(nmask, log1p(neg(tq)), zero);
  Tensor lt_ = where(pmask, log(where(pmask, tq, full({}, 1.0, o))), zero);
  Tensor a = where(nmask, add(logits, l1mt), ninf);
  Tensor b = where(pmask, add(neg(logits), lt_), ninf);
  Shape zs = logits.shape();
  zs.back() = 1;
  Tensor z = zeros(zs, o);
  return add(logsumexp(cat({a, z}, -1), {-1}), logsumexp(cat({b, z}, -1), {-1}));
}

// ------------------------------------------------------------------------------ n x m

struct Nxm {
  Tensor s;     // [B, n, m]
  Tensor logt;  // [B, n, m], log of the masked targets, -inf where the target is 0
  Shape batch;
  int64_t B, n, m;
};

Nxm nxm_prepare(const Tensor& logits, const Tensor& targets, double eps, const char* op) {
  LD_CHECK(logits.defined() && is_floating(logits.dtype()), op, ": logits must be f32 or f64");
  LD_CHECK(logits.dim() >= 2, op, ": logits must have shape [..., n, m], got ", shape_str(logits.shape()));
  LD_CHECK(eps >= 0 && eps < 0.5, op, ": eps must be in [0, 0.5), got ", eps);
  LD_CHECK(targets.defined(), op, ": targets are undefined");
  Nxm r;
  r.n = logits.shape()[size_t(logits.dim() - 2)];
  r.m = logits.shape().back();
  r.batch.assign(logits.shape().begin(), logits.shape().end() - 2);
  r.B = shape_numel(r.batch);
  int64_t N = r.B * r.n * r.m;
  std::vector<double> lt(static_cast<size_t>(N));
  if (targets.dtype() == DType::i64) {
    Shape want(logits.shape().begin(), logits.shape().end() - 1);
    LD_CHECK(targets.shape() == want, op, ": class-index targets must have shape ", shape_str(want), " for logits ",
             shape_str(logits.shape()), ", got ", shape_str(targets.shape()));
    std::vector<double> idx = targets.to_vector();
    for (size_t q = 0; q < idx.size(); ++q) {
      int64_t c = int64_t(idx[q]);
      LD_CHECK(c >= 0 && c < r.m, op, ": class index ", c, " at ", index_str(int64_t(q), want), " is out of range for ",
               r.m, " classes");
      for (int64_t k = 0; k < r.m; ++k) lt[q * size_t(r.m) + size_t(k)] = k == c ? 0.0 : -kInf;
    }
  } else {
    LD_CHECK(is_floating(targets.dtype()), op, ": targets must be f32/f64 distributions or i64 class indices");
    LD_CHECK(targets.shape() == logits.shape(), op, ": logits ", shape_str(logits.shape()), " and targets ",
             shape_str(targets.shape()), " must have the same shape");
    std::vector<double> t = targets.to_vector();
    for (size_t row = 0; row < size_t(r.B * r.n); ++row) {
      double tot = 0;
      for (size_t k = 0; k < size_t(r.m); ++k) {
        size_t q = row * size_t(r.m) + k;
        double v = t[q];
        if (!(v >= 0 && v <= 1)) report_bad_target(targets, targets.shape(), op, "targets must be in [0, 1]",
                                                   [](double u) { return u >= 0 && u <= 1; });
        tot += v;
        double tq = v < eps ? 0.0 : v > 1 - eps ? 1.0 : v;
        lt[q] = tq > 0 ? std::log(tq) : -kInf;
      }
      LD_CHECK(std::fabs(tot - 1) <= 1e-3, op, ": the targets of each sub-problem must sum to 1, got ", tot,
               " at ", index_str(int64_t(row), Shape(logits.shape().begin(), logits.shape().end() - 1)));
    }
  }
  r.s = logits.reshape({r.B, r.n, r.m});
  r.logt = from_vector(lt, {r.B, r.n, r.m}, logits.dtype()).to(logits.device());
  return r;
}

// logsumexp over the last dim with a 0 logit appended.
Tensor lse_with_zero(const Tensor& e) {
  Shape zs = e.shape();
  zs.back() = 1;
  return logsumexp(cat({e, zeros(zs, {e.dtype(), e.device()})}, -1), {-1});
}

}  // namespace

// ------------------------------------------------------------------------------ public API

// The fused row kernel, on the CPU (above) or a device's (losses/zlpr.cu); the composite is the reference.
Tensor zlpr(const Tensor& logits, const Tensor& targets, Reduction r) {
  return reduce(zlpr_fused(logits, targets, false, 0.0), r);
}

Tensor zlpr_soft(const Tensor& logits, const Tensor& targets, Reduction r, double eps) {
  return reduce(zlpr_fused(logits, targets, true, eps), r);
}

Tensor zlpr_composite(const Tensor& logits, const Tensor& targets, Reduction r) {
  return reduce(zlpr_composite_impl(logits, targets, false, 0.0), r);
}

Tensor zlpr_soft_composite(const Tensor& logits, const Tensor& targets, Reduction r, double eps) {
  return reduce(zlpr_composite_impl(logits, targets, true, eps), r);
}

Tensor zlpr_probs(const Tensor& logits) {
  check_logits(logits, "zlpr_probs");
  return sigmoid(mul(logits, 2.0));
}

Tensor zlpr_soft_min(const Tensor& targets) {
  LD_CHECK(targets.defined() && is_floating(targets.dtype()), "zlpr_soft_min: targets must be f32 or f64");
  LD_CHECK(targets.dim() >= 1, "zlpr_soft_min: targets must have at least 1 dim");
  NoGradGuard ng;
  Tensor t = masked_targets(targets.detach(), true, 0.0, "zlpr_soft_min");
  return mul(log1p(sum(sqrt(mul(t, rsub(t, 1.0))), {-1})), 2.0);
}

Tensor sparse_zlpr(const Tensor& logits, const Tensor& pos_index, Reduction r, bool mask_zero) {
  const char* op = "sparse_zlpr";
  check_logits(logits, op);
  LD_CHECK(pos_index.defined() && pos_index.dtype() == DType::i64, op, ": positive-label indices must be i64");
  int64_t C = logits.shape().back();
  LD_CHECK(pos_index.dim() == logits.dim(), op, ": indices ", shape_str(pos_index.shape()), " must be [..., K] for logits ",
           shape_str(logits.shape()));
  for (int64_t d = 0; d + 1 < logits.dim(); ++d)
    LD_CHECK(pos_index.shape()[size_t(d)] == logits.shape()[size_t(d)], op, ": indices ", shape_str(pos_index.shape()),
             " and logits ", shape_str(logits.shape()), " differ in the batch dims");
  {
    std::vector<double> iv = pos_index.to_vector();
    for (size_t q = 0; q < iv.size(); ++q)
      LD_CHECK(iv[q] >= 0 && iv[q] < double(C), op, ": label index ", int64_t(iv[q]), " at ",
               index_str(int64_t(q), pos_index.shape()), " is out of range for ", C, " labels");
    if (mask_zero) LD_CHECK(C >= 1, op, ": mask_zero needs a dummy class 0");
  }
  TensorOptions o{logits.dtype(), logits.device()};
  Shape zs = logits.shape();
  zs.back() = 1;
  Tensor z = zeros(zs, o);
  int64_t K = pos_index.shape().back();
  // Removed entries use ±1e30 rather than ±inf: finite, so no 0·inf appears in the backward of the
  // logsumexps when a row has no positive at all (e^{-1e30} is 0 in f32 and f64 alike).
  const double big = 1e30;
  Tensor s_pos = cat({logits, z}, -1), s_all = s_pos;
  if (mask_zero) {
    Tensor rest = logits.narrow(-1, 1, C - 1);
    s_pos = cat({full(zs, big, o), rest, z}, -1);
    s_all = cat({full(zs, -big, o), rest, z}, -1);
  }
  Tensor all = logsumexp(s_all, {-1});
  if (K == 0) return reduce(all, r);
  Tensor idx = pos_index.to(logits.device());
  Tensor pos = lse_with_zero(neg(gather(s_pos, -1, idx)));
  Tensor aux = sub(logsumexp(gather(s_all, -1, idx), {-1}), all);
  Tensor neg_ = add(all, log(clamp(rsub(exp(aux), 1.0), 1e-7, 1.0)));
  return reduce(add(pos, neg_), r);
}

Tensor nxm_loss1(const Tensor& logits, const Tensor& targets, Reduction r, double eps) {
  Nxm p = nxm_prepare(logits, targets, eps, "nxm_loss1");
  // E[b, i, j, k] = log t_ij - s_ij + s_ik, k != j (the diagonal is -inf).
  Tensor diag = zeros({p.m, p.m}, logits.dtype());
  for (int64_t j = 0; j < p.m; ++j) diag.set({j, j}, -kInf);
  diag = diag.to(logits.device());
  Tensor e = add(add(sub(p.logt, p.s).unsqueeze(-1), p.s.unsqueeze(-2)), diag);
  // For each class j: the log-sum over (i, k) with a 0 appended, then the sum over j.
  e = e.permute({0, 2, 1, 3}).reshape({p.B, p.m, p.n * p.m});
  return reduce(sum(lse_with_zero(e), {-1}).reshape(p.batch), r);
}

Tensor nxm_loss3(const Tensor& logits, const Tensor& targets, Reduction r, double eps) {
  Nxm p = nxm_prepare(logits, targets, eps, "nxm_loss3");
  Tensor sbar = mean(p.s, {-1}, true);                  // [B, n, 1]
  Tensor e = add(sub(p.logt, p.s), sbar).permute({0, 2, 1});  // [B, m(j), n(i)]
  return reduce(sum(lse_with_zero(e), {-1}).reshape(p.batch), r);
}

}  // namespace liandan::losses
