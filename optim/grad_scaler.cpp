#include "optim/grad_scaler.h"

#include <map>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "optim/clip.h"

namespace liandan::optim {

GradScaler::GradScaler(GradScalerOptions opt) : opt_(opt), scale_(opt.init_scale) {
  LD_CHECK(opt.init_scale > 0 && std::isfinite(opt.init_scale), "GradScaler: init_scale must be > 0 and finite, got ",
           opt.init_scale);
  LD_CHECK(opt.growth_factor > 1, "GradScaler: growth_factor must be > 1, got ", opt.growth_factor);
  LD_CHECK(opt.backoff_factor > 0 && opt.backoff_factor < 1, "GradScaler: backoff_factor must lie in (0, 1), got ",
           opt.backoff_factor);
  LD_CHECK(opt.growth_interval >= 1, "GradScaler: growth_interval must be >= 1, got ", opt.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss) const { return enabled() ? mul(loss, scale_) : loss; }

void GradScaler::unscale_(Optimizer& opt) {
  if (!enabled()) return;
  LD_CHECK(!unscaled_, "GradScaler::unscale_: already called since the last update()");
  unscaled_ = true;
  NoGradGuard ng;
  // A power-of-two scale (the default and every growth/backoff of it) divides exactly.
  double inv = 1.0 / scale_;
  for (const ParamGroup& g : opt.param_groups()) {
    if (!found_inf_ && first_nonfinite_grad(g.params)) found_inf_ = true;
    std::vector<Tensor> grads;
    for (auto& [name, p] : g.params)
      if (p.grad().defined()) grads.push_back(p.grad());
    foreach_axpby_(grads, {}, inv, 0.0);  // one multi-tensor pass on a GPU
  }
}

bool GradScaler::step(Optimizer& opt) {
  if (!enabled()) {
    opt.step();
    return true;
  }
  if (!unscaled_) unscale_(opt);
  if (found_inf_) {
    ++skipped_;
    return false;
  }
  opt.step();
  return true;
}

void GradScaler::update() {
  if (!enabled()) return;
  LD_CHECK(unscaled_, "GradScaler::update: call step() (or unscale_()) first");
  if (found_inf_) {
    scale_ *= opt_.backoff_factor;
    tracker_ = 0;
  } else if (++tracker_ == opt_.growth_interval) {
    scale_ *= opt_.growth_factor;
    tracker_ = 0;
  }
  unscaled_ = found_inf_ = false;
}

NamedTensors GradScaler::state_dict() const {
  auto scalar = [](double v) { return scalar_tensor(v, DType::f64); };
  return {{"grad_scaler.scale", scalar(scale_)},
          {"grad_scaler.growth_tracker", scalar(double(tracker_))},
          {"grad_scaler.skipped", scalar(double(skipped_))}};
}

void GradScaler::load_state_dict(const NamedTensors& dict, const std::string& source) {
  std::map<std::string, Tensor> byname(dict.begin(), dict.end());
  auto get = [&](const std::string& key) {
    auto it = byname.find(key);
    LD_CHECK(it != byname.end(), "GradScaler: ", source, ": missing '", key, "'");
    LD_CHECK(it->second.numel() == 1, "GradScaler: ", source, ": '", key, "' must hold one number, has shape ",
             shape_str(it->second.shape()));
    return it->second.item();
  };
  double s = get("grad_scaler.scale");
  LD_CHECK(s > 0 && std::isfinite(s), "GradScaler: ", source, ": 'grad_scaler.scale' must be > 0 and finite, got ", s);
  scale_ = s;
  tracker_ = int64_t(get("grad_scaler.growth_tracker"));
  skipped_ = int64_t(get("grad_scaler.skipped"));
  unscaled_ = found_inf_ = false;
}

}  // namespace liandan::optim
