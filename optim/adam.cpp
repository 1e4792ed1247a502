#include "optim/adam.h"

#include <map>

#include "core/cpu/loops.h"
#include "core/error.h"
#include "core/ops.h"
#include "optim/adam_row.h"
#include "optim/kernels.h"

namespace liandan::optim {

LD_DEFINE_KERNEL(adam_step);  // optim/kernels.h; CUDA's in optim/adam.cu

Adam::Adam(const NamedParams& params, AdamOptions opt) : Adam({ParamGroup{.params = params}}, opt) {}
Adam::Adam(std::vector<ParamGroup> groups, AdamOptions opt) : Adam("Adam", std::move(groups), opt, false) {}

namespace {
// Before the base class takes lr and weight_decay as the groups' defaults (its own group checks would name
// the group, not the option).
const AdamOptions& checked(const AdamOptions& o, bool decoupled) {
  const std::string who = decoupled ? "AdamW" : "Adam";
  check_nonnegative(who, "lr", o.lr);
  check_unit(who, "beta1", o.beta1);
  check_unit(who, "beta2", o.beta2);
  check_positive(who, "eps", o.eps);
  check_nonnegative(who, "weight_decay", o.weight_decay);
  check_strategy(who, o.strategy);
  return o;
}
}  // namespace

Adam::Adam(std::string name, std::vector<ParamGroup> groups, AdamOptions opt, bool decoupled)
    : Optimizer(std::move(name), std::move(groups), checked(opt, decoupled).lr, opt.weight_decay), opt_(opt),
      decoupled_(decoupled) {}

AdamW::AdamW(const NamedParams& params, AdamWOptions opt) : AdamW({ParamGroup{.params = params}}, opt) {}
AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opt) : Adam("AdamW", std::move(groups), opt, true) {}

void Adam::init_state(ParamState& s, const ParamGroup&) {
  s.slots.emplace_back("exp_avg", zeros_like(s.param));
  s.slots.emplace_back("exp_avg_sq", zeros_like(s.param));
  if (opt_.amsgrad) s.slots.emplace_back("max_exp_avg_sq", zeros_like(s.param));
}

namespace {

using AdamStep = AdamStepArgs;  // optim/kernels.h: the same scalars drive the device kernels

// One fused pass: decay, moments (optim/adam_row.h, the CUDA kernel's own formula), and either the update itself
// or — for the per-tensor-lr strategy, which needs the direction's norm first — the direction m̂/denom into `u`.
template <class T, bool kAmsgrad, bool kDirection>
void adam_pass(T* p, const T* g, T* m, T* v, T* vmax, T* u, int64_t n, const AdamStep& a) {
  const AdamCoefs<T> c = adam_coefs<T>(a);
  cpu::parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T pi, mi;
      T denom = adam_element<T, kAmsgrad>(p[i], g[i], m[i], v[i], kAmsgrad ? vmax + i : nullptr, c, pi, mi);
      if constexpr (kDirection) {
        u[i] = (mi * c.inv_bc1) / denom;
        p[i] = pi;
      } else {
        p[i] = pi + c.neg_step * mi / denom;
      }
    }
  });
}

// The same update in tensor ops (any device), line for line as adam_pass. With the per-tensor-lr strategy it
// returns the direction u instead of stepping (the caller steps along it once its norm is known).
Tensor adam_tensors(ParamState& s, const Tensor& grad, const Tensor& vmax, const AdamStep& a, bool direction) {
  Tensor p = s.param, m = s.slot("exp_avg"), v = s.slot("exp_avg_sq");
  Tensor gi = a.l2 != 0 ? add(grad, mul(p, a.l2)) : grad;
  if (a.decay != 0) p.copy_(mul(p, 1 - a.decay));
  m.copy_(add(m, mul(sub(gi, m), 1 - a.beta1)));
  v.copy_(add(mul(v, a.beta2), mul(mul(gi, gi), 1 - a.beta2)));
  Tensor vi = v;
  if (vmax.defined()) {
    Tensor(vmax).copy_(maximum(vmax, v));
    vi = vmax;
  }
  Tensor denom = add(div(sqrt(vi), full({}, a.bc2_sqrt, {p.dtype(), p.device()})), a.eps);
  if (direction) return div(mul(m, 1.0 / a.bc1), denom);
  p.copy_(add(p, div(mul(m, -(a.lr / a.bc1)), denom)));  // neg_step·m / denom, as adam_pass
  return Tensor();
}

template <class T>
void apply_direction(T* p, const T* u, int64_t n, double step) {
  const T s = T(-step);
  cpu::parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] += s * u[i];
  });
}

}  // namespace

AdamStep Adam::step_args(const ParamState& s, const ParamGroup& g) const {
  const Strategy& st = opt_.strategy;
  AdamStep a;
  a.lr = g.lr;
  a.beta1 = opt_.beta1;
  a.beta2 = opt_.beta2;
  a.eps = opt_.eps;
  bool decoupled = decoupled_ || st.tie_weight_decay;
  a.decay = decoupled ? decoupled_decay(g, st) : 0.0;
  a.l2 = decoupled ? 0.0 : g.weight_decay;
  a.bc1 = 1 - std::pow(opt_.beta1, double(s.step));
  a.bc2_sqrt = std::sqrt(1 - std::pow(opt_.beta2, double(s.step)));
  return a;
}

// The device's multi-tensor kernel (optim/adam.cu) takes the update unless tensor ops are asked for, or
// the per-tensor-lr strategy needs each direction's norm first (the kernel has no norm pass).
bool Adam::on_device_kernel(const ParamState& s) const {
  return !s.param.device().is_cpu() && opt_.fused && !opt_.strategy.per_tensor_lr;
}

void Adam::update_all(std::vector<PendingUpdate>& due) {
  std::map<std::pair<std::string, DType>, std::vector<AdamTensor>> batches;  // one kernel list per device and dtype
  for (PendingUpdate& u : due) {
    ParamState& s = *u.state;
    if (!on_device_kernel(s)) {
      update(s, *u.group, u.grad);
      continue;
    }
    Tensor vmax = opt_.amsgrad ? s.slot("max_exp_avg_sq") : Tensor();
    batches[{s.param.device().str(), s.param.dtype()}].push_back(
        {s.param, u.grad, s.slot("exp_avg"), s.slot("exp_avg_sq"), vmax, step_args(s, *u.group)});
  }
  for (auto& [key, list] : batches) adam_step(list[0].p.device(), list);
}

void Adam::update(ParamState& s, const ParamGroup& g, const Tensor& grad) {
  const Strategy& st = opt_.strategy;
  AdamStep a = step_args(s, g);
  Tensor vmax = opt_.amsgrad ? s.slot("max_exp_avg_sq") : Tensor();
  // (update_all batches the parameters the device kernel takes; the rest come here.)
  if (!opt_.fused || !s.param.device().is_cpu()) {
    if (Tensor u = adam_tensors(s, grad, vmax, a, st.per_tensor_lr); u.defined()) step_along(s, u, st, g.lr);
    return;
  }
  Tensor u = st.per_tensor_lr ? empty_like(s.param) : Tensor();
  LD_DISPATCH_FLOAT(s.param.dtype(), "Adam", [&] {
    using T = scalar_t;
    T* p = s.param.data_ptr<T>();
    const T* gp = grad.data_ptr<T>();
    T* m = s.slot("exp_avg").data_ptr<T>();
    T* v = s.slot("exp_avg_sq").data_ptr<T>();
    int64_t n = s.param.numel();
    if (u.defined()) {
      if (vmax.defined()) adam_pass<T, true, true>(p, gp, m, v, vmax.data_ptr<T>(), u.data_ptr<T>(), n, a);
      else adam_pass<T, false, true>(p, gp, m, v, nullptr, u.data_ptr<T>(), n, a);
      apply_direction<T>(p, u.data_ptr<T>(), n, g.lr * per_tensor_lr_factor(s, st, u));
    } else {
      if (vmax.defined()) adam_pass<T, true, false>(p, gp, m, v, vmax.data_ptr<T>(), nullptr, n, a);
      else adam_pass<T, false, false>(p, gp, m, v, nullptr, nullptr, n, a);
    }
  });
}

}  // namespace liandan::optim
