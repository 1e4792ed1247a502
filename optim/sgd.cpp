#include "optim/sgd.h"

#include "core/cpu/loops.h"
#include "core/error.h"
#include "core/ops.h"

namespace liandan::optim {

SGD::SGD(const NamedParams& params, SGDOptions opt) : SGD({ParamGroup{.params = params}}, opt) {}

namespace {
const SGDOptions& checked(const SGDOptions& o) {
  check_nonnegative("SGD", "lr", o.lr);
  check_unit("SGD", "momentum", o.momentum);
  LD_CHECK(o.dampening >= 0 && o.dampening <= 1, "SGD: dampening must be in [0, 1], got ", o.dampening);
  check_nonnegative("SGD", "weight_decay", o.weight_decay);
  check_strategy("SGD", o.strategy);
  return o;
}
}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions opt)
    : Optimizer("SGD", std::move(groups), checked(opt).lr, opt.weight_decay), opt_(opt) {
  LD_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0),
           "SGD: Nesterov momentum requires momentum > 0 and dampening = 0");
}

void SGD::init_state(ParamState& s, const ParamGroup&) {
  if (opt_.momentum > 0) s.slots.emplace_back("momentum_buffer", zeros_like(s.param));
}

namespace {
// d = g + l2·θ; buf = d (first step) or μ·buf + (1−dampening)·d; d = d + μ·buf (Nesterov) or buf.
// Writes the direction d into `dir` (which may alias nothing else).
template <class T>
void sgd_direction(const T* p, const T* g, T* buf, T* dir, int64_t n, double l2, double mu, double damp,
                   bool nesterov, bool first) {
  const T tl2 = T(l2), tmu = T(mu), w = T(1 - damp);
  cpu::parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T d = g[i] + tl2 * p[i];
      if (buf) {
        buf[i] = first ? d : buf[i] * tmu + w * d;
        d = nesterov ? d + tmu * buf[i] : buf[i];
      }
      dir[i] = d;
    }
  });
}
}  // namespace

void SGD::update(ParamState& s, const ParamGroup& g, const Tensor& grad) {
  const Strategy& st = opt_.strategy;
  double decay = st.tie_weight_decay ? decoupled_decay(g, st) : 0.0;
  double l2 = st.tie_weight_decay ? 0.0 : g.weight_decay;
  Tensor buf = opt_.momentum > 0 ? s.slot("momentum_buffer") : Tensor();
  if (!opt_.fused || !s.param.device().is_cpu()) {  // the same steps in tensor ops (any device)
    Tensor d = l2 != 0 ? add(grad, mul(s.param, l2)) : grad;
    if (buf.defined()) {
      buf.copy_(s.step == 1 ? d : add(mul(buf, opt_.momentum), mul(d, 1 - opt_.dampening)));
      d = opt_.nesterov ? add(d, mul(buf, opt_.momentum)) : buf;
    }
    step_along(s, d, st, g.lr, 1 - decay);
    return;
  }
  Tensor dir = empty_like(s.param);
  LD_DISPATCH_FLOAT(s.param.dtype(), "SGD", [&] {
    using T = scalar_t;
    T* p = s.param.data_ptr<T>();
    int64_t n = s.param.numel();
    sgd_direction<T>(p, grad.data_ptr<T>(), buf.defined() ? buf.data_ptr<T>() : nullptr, dir.data_ptr<T>(), n, l2,
                     opt_.momentum, opt_.dampening, opt_.nesterov, s.step == 1);
    const T step = T(-(g.lr * per_tensor_lr_factor(s, st, dir))), keep = T(1 - decay);
    const T* d = dir.data_ptr<T>();
    cpu::parallel_range(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = p[i] * keep + step * d[i];
    });
  });
}

}  // namespace liandan::optim
