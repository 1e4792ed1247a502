// The cross-entropy family and the regression losses, with torch.nn.functional's semantics.
// Built from core ops (log_softmax, gather, ...) so their gradients come from autograd; the one
// fused piece is binary_cross_entropy_with_logits, whose softplus must be exact for every x
// (core softplus switches to the identity above its threshold) and whose gradient at x = 0 must be
// the true one (σ(0) = 1/2), which a composite of abs/relu would get wrong.
#include <cmath>
#include <string>
#include <vector>

#include "core/cpu/map.h"
#include "losses/losses.h"

namespace liandan::losses {

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
  }
  return "?";
}

Tensor reduce(const Tensor& l, Reduction r) {
  switch (r) {
    case Reduction::none: return l;
    case Reduction::sum: return sum(l);
    case Reduction::mean: return mul(sum(l), 1.0 / double(l.numel()));  // 0 elements: 0 * inf = NaN, as torch
  }
  LD_FAIL("reduce: unknown reduction");
}

namespace {

void check_float(const Tensor& t, const char* op, const char* what) {
  LD_CHECK(t.defined(), op, ": ", what, " is undefined");
  LD_CHECK(is_floating(t.dtype()), op, ": ", what, " must be f32 or f64, got ", dtype_name(t.dtype()), " ",
           shape_str(t.shape()));
}

// Target detached and in the input's dtype (targets carry no gradient).
Tensor as_target(const Tensor& t, DType dt) {
  Tensor d = t.detach();
  return d.dtype() == dt ? d : d.to(dt);
}

// logits [C] | [N, C] | [N, C, d1, ...] -> rows [M, C] (the class dim moved last) and the shape
// of the per-element loss ([] | [N] | [N, d1, ...]).
struct Rows {
  Tensor x;        // [M, C]
  Shape out_shape;
  int64_t C;
};

Rows to_rows(const Tensor& x, const char* op) {
  LD_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim (the classes), got shape ", shape_str(x.shape()));
  if (x.dim() == 1) return {x.unsqueeze(0), {}, x.shape()[0]};
  int64_t C = x.shape()[1];
  Shape out{x.shape()[0]};
  for (int64_t d = 2; d < x.dim(); ++d) out.push_back(x.shape()[d]);
  if (x.dim() == 2) return {x, out, C};
  Shape perm{0};
  for (int64_t d = 2; d < x.dim(); ++d) perm.push_back(d);
  perm.push_back(1);
  return {x.permute(perm).reshape({-1, C}), out, C};
}

Tensor class_weight(const Tensor& w, int64_t C, DType dt, const char* op) {
  if (!w.defined()) return Tensor();
  check_float(w, op, "weight");
  LD_CHECK(w.dim() == 1 && w.shape()[0] == C, op, ": weight must have shape [", C, "] (one per class), got ",
           shape_str(w.shape()));
  return as_target(w, dt).contiguous();
}

// Per-element NLL from rows of log-probabilities lp [M, C] and i64 class targets (target shape
// checked against `out_shape`). Returns the per-element loss [M] (0 at ignored targets), the
// target weights w[y] (0 at ignored targets) and their total.
struct Nll {
  Tensor loss, wy, valid;
  double wsum = 0;
};

Nll nll_rows(const Tensor& lp, const Tensor& target, const Shape& out_shape, const Tensor& w, int64_t ignore_index,
             const char* op, const Shape& input_shape) {
  LD_CHECK(target.defined() && target.dtype() == DType::i64, op,
           ": class-index targets must be i64, got ", target.defined() ? dtype_name(target.dtype()) : "undefined");
  LD_CHECK(target.shape() == out_shape, op, ": target shape ", shape_str(target.shape()),
           " does not match input ", shape_str(input_shape), " (expected target shape ", shape_str(out_shape), ")");
  int64_t M = lp.shape()[0], C = lp.shape()[1];
  Tensor tc = target.to(Device::cpu()).contiguous();  // targets are read on the host (range-checked there)
  const int64_t* pt = tc.data_ptr<int64_t>();
  std::vector<int64_t> safe(static_cast<size_t>(M));
  std::vector<double> wy(static_cast<size_t>(M)), valid(static_cast<size_t>(M));
  std::vector<double> wv = w.defined() ? w.to(DType::f64).to_vector() : std::vector<double>();
  Nll r;
  for (int64_t i = 0; i < M; ++i) {
    int64_t y = pt[i];
    if (y == ignore_index) {
      safe[size_t(i)] = 0;
      continue;
    }
    LD_CHECK(y >= 0 && y < C, op, ": target ", y, " at position ", i, " is out of range for ", C,
             " classes (input ", shape_str(input_shape), ", ignore_index ", ignore_index, ")");
    safe[size_t(i)] = y;
    valid[size_t(i)] = 1;
    wy[size_t(i)] = w.defined() ? wv[size_t(y)] : 1.0;
    r.wsum += wy[size_t(i)];
  }
  TensorOptions o{lp.dtype(), lp.device()};
  r.wy = from_vector(wy, {M}, o);
  r.valid = from_vector(valid, {M}, o);
  Tensor picked = M ? gather(lp, 1, from_vector(safe, {M, 1}).to(lp.device())).reshape({M}) : zeros({0}, o);
  r.loss = neg(mul(picked, r.wy));
  return r;
}

// Per-element loss [M] -> the reduction, with `den` as the mean's denominator.
Tensor finish(const Tensor& l, const Shape& out_shape, Reduction red, double den) {
  switch (red) {
    case Reduction::none: return l.reshape(out_shape);
    case Reduction::sum: return sum(l);
    case Reduction::mean: return mul(sum(l), 1.0 / den);  // den == 0 (all ignored): NaN, as torch
  }
  LD_FAIL("loss: unknown reduction");
}

}  // namespace

// ------------------------------------------------------------------------------ nll / cross-entropy

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const NllOptions& opt) {
  const char* op = "nll_loss";
  check_float(log_probs, op, "input");
  Rows r = to_rows(log_probs, op);
  Tensor w = class_weight(opt.weight, r.C, log_probs.dtype(), op);
  Nll n = nll_rows(r.x, target, r.out_shape, w, opt.ignore_index, op, log_probs.shape());
  return finish(n.loss, r.out_shape, opt.reduction, n.wsum);
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& opt) {
  const char* op = "cross_entropy";
  check_float(logits, op, "input");
  LD_CHECK(target.defined(), op, ": target is undefined");
  double a = opt.label_smoothing;
  LD_CHECK(a >= 0 && a <= 1, op, ": label_smoothing must be in [0, 1], got ", a);
  Rows r = to_rows(logits, op);
  Tensor w = class_weight(opt.weight, r.C, logits.dtype(), op);
  Tensor lp = log_softmax(r.x, -1);  // [M, C]

  if (target.dtype() == DType::i64) {
    Nll n = nll_rows(lp, target, r.out_shape, w, opt.ignore_index, op, logits.shape());
    Tensor l = n.loss;
    if (a > 0) {
      // torch: smooth = -Σ_c w[c]·lp[n, c], zeroed at ignored targets, reduced like the NLL part.
      Tensor wl = w.defined() ? mul(lp, w) : lp;
      Tensor smooth = mul(neg(sum(wl, {1})), n.valid);
      l = add(mul(l, 1 - a), mul(smooth, a / double(r.C)));
    }
    return finish(l, r.out_shape, opt.reduction, n.wsum);
  }

  check_float(target, op, "target (class indices must be i64)");
  LD_CHECK(target.shape() == logits.shape(), op, ": probability targets must have the input's shape ",
           shape_str(logits.shape()), ", got ", shape_str(target.shape()),
           " (class-index targets must be i64)");
  Tensor t = to_rows(as_target(target, logits.dtype()), op).x;  // [M, C]
  if (a > 0) t = add(mul(t, 1 - a), a / double(r.C));
  Tensor prod = mul(lp, t);
  if (w.defined()) prod = mul(prod, w);
  Tensor l = neg(sum(prod, {1}));  // [M]
  return finish(l, r.out_shape, opt.reduction, double(l.numel()));
}

// ------------------------------------------------------------------------------ BCE with logits

namespace {

// f(x, a, b) = a·softplus(x) + b·softplus(-x) with a = 1 - t and b = pw·t: torch's
// (1-t)·x + (1 + (pw-1)·t)·softplus(-x) rewritten with x + softplus(-x) = softplus(x), so no
// cancellation (at x = -30, t = 0 torch's form loses 1% of the 9.36e-14 result). softplus(x) =
// max(x, 0) + log1p(e^{-|x|}), exact for every x. df/dx = a·σ(x) - b·σ(-x).
template <class T>
inline T softplus_exact(T x) {
  return std::fmax(x, T(0)) + std::log1p(std::exp(-std::fabs(x)));
}
template <class T>
inline T sigmoid_exact(T x) {  // σ(x), no overflow at either end
  T e = std::exp(-std::fabs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}

Tensor bce_core(const Tensor& x, const Tensor& a, const Tensor& b) {
  const char* name = "binary_cross_entropy_with_logits";
  // On a device: the same formula in core ops (softplus cuts over to x above 20: an error below 3e-9).
  if (!x.device().is_cpu()) return add(mul(a, softplus(x)), mul(b, softplus(neg(x))));
  Tensor y = LD_DISPATCH_FLOAT(x.dtype(), name, [&] {
    return cpu::map<scalar_t, 3>(x.shape(), {&x, &a, &b}, [](scalar_t v, scalar_t p, scalar_t q) {
      return p * softplus_exact(v) + q * softplus_exact(-v);
    });
  });
  if (needs_grad({&x})) {
    SavedTensor sx(x, name);
    Tensor ac = a, bc = b;
    record(name, y, {x}, [sx, ac, bc, name](const Tensor& g) {
      const Tensor& xv = sx.get();
      Tensor d = LD_DISPATCH_FLOAT(xv.dtype(), name, [&] {
        return cpu::map<scalar_t, 3>(xv.shape(), {&xv, &ac, &bc}, [](scalar_t v, scalar_t p, scalar_t q) {
          return p * sigmoid_exact(v) - q * sigmoid_exact(-v);
        });
      });
      return std::vector<Tensor>{mul(d, g)};
    });
  }
  return y;
}

}  // namespace

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, const BceOptions& opt) {
  const char* op = "binary_cross_entropy_with_logits";
  check_float(logits, op, "input");
  LD_CHECK(target.defined(), op, ": target is undefined");
  LD_CHECK(target.shape() == logits.shape(), op, ": target shape ", shape_str(target.shape()),
           " must match input shape ", shape_str(logits.shape()));
  DType dt = logits.dtype();
  Tensor t = as_target(target, dt).to(logits.device());
  Tensor a = rsub(t, 1.0), b = t;
  if (opt.pos_weight.defined()) {
    check_float(opt.pos_weight, op, "pos_weight");
    Tensor pw = as_target(opt.pos_weight, dt).to(logits.device());
    broadcast_shapes(pw.shape(), logits.shape(), "binary_cross_entropy_with_logits (pos_weight)");
    b = mul(t, pw);
    LD_CHECK(b.shape() == logits.shape(), op, ": pos_weight ", shape_str(pw.shape()),
             " must broadcast to the input shape ", shape_str(logits.shape()));
  }
  Tensor l = bce_core(logits, a, b);
  if (opt.weight.defined()) {
    check_float(opt.weight, op, "weight");
    Tensor w = as_target(opt.weight, dt).to(logits.device());
    broadcast_shapes(w.shape(), logits.shape(), "binary_cross_entropy_with_logits (weight)");
    l = mul(l, w);
    LD_CHECK(l.shape() == logits.shape(), op, ": weight ", shape_str(w.shape()), " must broadcast to the input shape ",
             shape_str(logits.shape()));
  }
  return reduce(l, opt.reduction);
}

// ------------------------------------------------------------------------------ regression

namespace {
Tensor diff(const Tensor& input, const Tensor& target, const char* op) {
  check_float(input, op, "input");
  LD_CHECK(target.defined(), op, ": target is undefined");
  LD_CHECK(target.shape() == input.shape(), op, ": input shape ", shape_str(input.shape()),
           " and target shape ", shape_str(target.shape()), " differ");
  return sub(input, as_target(target, input.dtype()));
}
}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction r) {
  return reduce(square(diff(input, target, "mse_loss")), r);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction r) {
  return reduce(abs(diff(input, target, "l1_loss")), r);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction r, double beta) {
  LD_CHECK(beta >= 0, "smooth_l1_loss: beta must be >= 0, got ", beta);
  Tensor d = diff(input, target, "smooth_l1_loss");
  Tensor ad = abs(d);
  if (beta == 0) return reduce(ad, r);
  Tensor small = lt(ad.detach(), beta);
  return reduce(where(small, mul(square(d), 0.5 / beta), add(ad, -0.5 * beta)), r);
}

Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction r, double delta) {
  LD_CHECK(delta > 0, "huber_loss: delta must be > 0, got ", delta);
  Tensor d = diff(input, target, "huber_loss");
  Tensor ad = abs(d);
  Tensor small = lt(ad.detach(), delta);
  return reduce(where(small, mul(square(d), 0.5), mul(add(ad, -0.5 * delta), delta)), r);
}

}  // namespace liandan::losses
