#include "optim/amos.h"
#include "optim/amos_row.h"

#include <map>
#include <vector>

#include "core/cpu/loops.h"
#include "core/error.h"
#include "core/ops.h"
#include "optim/kernels.h"

namespace liandan::optim {

LD_DEFINE_KERNEL(amos_step);  // optim/kernels.h; CUDA's in optim/amos.cu

Amos::Amos(const NamedParams& params, AmosOptions opt) : Amos({ParamGroup{.params = params}}, opt) {}

namespace {
const AmosOptions& checked(const AmosOptions& o) {
  check_nonnegative("Amos", "lr", o.lr);
  check_unit("Amos", "beta", o.beta);
  check_nonnegative("Amos", "c_coef", o.c_coef);
  check_nonnegative("Amos", "d_coef", o.d_coef);
  check_nonnegative("Amos", "extra_l2", o.extra_l2);
  check_positive("Amos", "epsilon", o.epsilon);
  check_unit("Amos", "momentum", o.momentum);
  check_nonnegative("Amos", "clip_value", o.clip_value);
  check_positive("Amos", "finetune_rate", o.finetune_rate);
  check_nonnegative("Amos", "init_b", o.init_b);
  return o;
}
}  // namespace

Amos::Amos(std::vector<ParamGroup> groups, AmosOptions opt)
    : Optimizer("Amos", std::move(groups), checked(opt).lr, opt.extra_l2), opt_(std::move(opt)) {
  if (opt_.eta)
    for (auto& st : states())
      for (auto& s : st) s.scale = opt_.eta(s.name, s.param);
  for (auto& st : states())
    for (auto& s : st) {
      LD_CHECK(s.scale > 0 && std::isfinite(s.scale), "Amos: parameter '", s.name, "': invalid eta ", s.scale);
      slot_shape_for(s.name, s.param.shape());  // validates overrides now, not at the first step
    }
}

Shape Amos::slot_shape_for(const std::string& name, const Shape& shape) const {
  Shape slot;
  if (opt_.slot_shape) slot = opt_.slot_shape(name, shape);
  if (slot.empty() && !(opt_.slot_shape && shape.empty())) {
    if (!opt_.factored) return shape;
    if (shape.size() < 2) return {};
    slot = Shape(shape.size(), 1);
    slot[0] = shape[0];
    return slot;
  }
  // A kept prefix then reduced dims: v and b broadcast against θ as rows of a [rows, inner] matrix.
  bool reducing = false, ok = slot.size() == shape.size();
  for (size_t d = 0; ok && d < shape.size(); ++d) {
    if (slot[d] == shape[d] && !reducing) continue;
    reducing = true;
    ok = slot[d] == 1;
  }
  LD_CHECK(ok, "Amos: slot shape ", shape_str(slot), " for parameter '", name, "' ", shape_str(shape),
           " must keep a prefix of the dims and reduce the rest to 1 (e.g. [out, 1, 1, 1] or [])");
  return slot;
}

void Amos::init_state(ParamState& s, const ParamGroup&) {
  Shape slot = slot_shape_for(s.name, s.param.shape());
  TensorOptions o{s.param.dtype(), s.param.device()};
  s.slots.emplace_back("v", zeros(slot, o));
  s.slots.emplace_back("b", full(slot, opt_.init_b, o));
  if (opt_.momentum > 0) s.slots.emplace_back("u", zeros_like(s.param));
}

namespace {

AmosRowOptions row_options(const AmosOptions& o) {
  return {o.beta, o.epsilon, o.c_coef, o.d_coef, o.finetune_rate};
}

template <class T>
void amos_update(T* p, const T* g, T* v, T* b, T* u, int64_t rows, int64_t inner, double xi, double eta,
                 double lambda, double bias_correction, const AmosOptions& o) {
  const double clip = o.clip_value;
  const T mu = T(o.momentum), one_minus_mu = T(1 - o.momentum);
  auto clipped = [clip](T x) { return clip > 0 ? std::clamp(x, T(-clip), T(clip)) : x; };
  // Rows are independent, so they split over threads; a row's mean of g² is summed in one fixed order.
  int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(inner, 1));
  cpu::parallel_range(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      T* pr = p + r * inner;
      const T* gr = g + r * inner;
      double ss = 0;
      for (int64_t i = 0; i < inner; ++i) {
        double gi = double(clipped(gr[i]));
        ss += gi * gi;
      }
      AmosRow k = amos_row(double(v[r]), double(b[r]), ss / double(inner), xi, eta, lambda, bias_correction,
                           row_options(o));
      v[r] = T(k.v);
      b[r] = T(k.b);
      const T A = T(k.A), B = T(k.B);
      if (u) {
        T* ur = u + r * inner;
        for (int64_t i = 0; i < inner; ++i) {
          ur[i] = mu * ur[i] + one_minus_mu * (-A * clipped(gr[i]) - B * pr[i]);
          pr[i] += ur[i];
        }
      } else {
        for (int64_t i = 0; i < inner; ++i) pr[i] += -A * clipped(gr[i]) - B * pr[i];
      }
    }
  }, grain);
}

// The same update in tensor ops (any device): the row scalars in f64 over [rows] vectors, as amos_row
// computes them, then θ += −A·g − B·θ (or through the momentum slot) broadcast over each row.
void amos_update_tensors(const Tensor& p, const Tensor& grad, const Tensor& v, const Tensor& b, const Tensor& u,
                         int64_t rows, int64_t inner, double xi, double eta, double lambda, double bias_correction,
                         const AmosOptions& o) {
  DType dt = p.dtype(), f64 = DType::f64;
  Tensor gc = o.clip_value > 0 ? clamp(grad, -o.clip_value, o.clip_value) : grad;
  gc = gc.reshape({rows, inner});
  Tensor g2 = mean(square(gc.to(f64)), {1});
  Tensor bo = b.reshape({rows}).to(f64);
  Tensor vn = add(mul(v.reshape({rows}).to(f64), o.beta), mul(g2, 1 - o.beta));
  Tensor r = rdiv(clamp(vn, o.epsilon, std::nullopt), bias_correction);
  Tensor c = rsqrt(add(mul(bo, o.c_coef * std::sqrt(xi)), 1.0));
  double fr = o.finetune_rate, alpha = xi * eta;
  Tensor gamma = mul(mul(mul(c, r), g2), std::sqrt(fr) * xi * xi);
  Tensor d = rdiv(add(mul(bo, o.d_coef * std::sqrt(alpha)), 1.0), 1.0);
  Tensor(v).copy_(vn.reshape(v.shape()));
  Tensor(b).copy_(add(bo, mul(gamma, add(bo, fr))).reshape(b.shape()));
  Tensor A = mul(mul(d, sqrt(r)), fr * alpha).to(dt).unsqueeze(1);
  Tensor B = mul(mul(d, add(mul(gamma, 0.5), lambda)), fr).to(dt).unsqueeze(1);
  Tensor pr = p.view({rows, inner});
  Tensor step = sub(mul(neg(A), gc), mul(B, pr));
  if (u.defined()) {
    Tensor ur = u.view({rows, inner});
    ur.copy_(add(mul(ur, o.momentum), mul(step, 1 - o.momentum)));
    step = ur;
  }
  pr.copy_(add(pr, step));
}

}  // namespace

// On a device, the fused update is the multi-tensor kernel (optim/amos.cu): all of a device's parameters
// of one dtype in a few launches.
void Amos::update_all(std::vector<PendingUpdate>& due) {
  std::map<std::pair<std::string, DType>, std::vector<AmosTensor>> batches;
  for (PendingUpdate& pu : due) {
    ParamState& s = *pu.state;
    if (!opt_.fused || s.param.device().is_cpu()) {
      update(s, *pu.group, pu.grad);
      continue;
    }
    Tensor v = s.slot("v"), b = s.slot("b"), u = opt_.momentum > 0 ? s.slot("u") : Tensor();
    int64_t rows = v.numel(), inner = s.param.numel() / std::max<int64_t>(rows, 1);
    batches[{s.param.device().str(), s.param.dtype()}].push_back(
        {s.param, pu.grad, v, b, u, rows, inner, pu.group->lr, s.scale, pu.group->weight_decay,
         1 - std::pow(opt_.beta, double(s.step))});
  }
  AmosStepArgs a{opt_.beta, opt_.epsilon, opt_.c_coef, opt_.d_coef, opt_.finetune_rate, opt_.momentum, opt_.clip_value};
  for (auto& [key, list] : batches) amos_step(list[0].p.device(), list, a);
}

void Amos::update(ParamState& s, const ParamGroup& g, const Tensor& grad) {
  Tensor& v = s.slot("v");
  Tensor& b = s.slot("b");
  Tensor u = opt_.momentum > 0 ? s.slot("u") : Tensor();
  int64_t rows = v.numel(), inner = s.param.numel() / std::max<int64_t>(rows, 1);
  double bias_correction = 1 - std::pow(opt_.beta, double(s.step));
  if (!opt_.fused || !s.param.device().is_cpu())
    return amos_update_tensors(s.param, grad, v, b, u, rows, inner, g.lr, s.scale, g.weight_decay, bias_correction, opt_);
  LD_DISPATCH_FLOAT(s.param.dtype(), "Amos", [&] {
    using T = scalar_t;
    amos_update<T>(s.param.data_ptr<T>(), grad.data_ptr<T>(), v.data_ptr<T>(), b.data_ptr<T>(),
                   u.defined() ? u.data_ptr<T>() : nullptr, rows, inner, g.lr, s.scale, g.weight_decay,
                   bias_correction, opt_);
  });
}

}  // namespace liandan::optim
