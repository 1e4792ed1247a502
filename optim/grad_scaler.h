#pragma once
// Dynamic loss scaling for f16 mixed precision (torch.amp.GradScaler). f16 gradients underflow below
// 6e-8 and overflow above 65504; multiplying the loss by a large scale S lifts small gradients into range,
// and dividing the f32 gradients by S before the step restores them. When a step's gradients hold an
// Inf/NaN (S too large), the step is skipped and S halves; after `growth_interval` clean steps S doubles.
//
//   optim::GradScaler scaler;                      // f16: { Autocast ac(DType::f16); loss = ...; }
//   scaler.scale(loss).backward();
//   scaler.unscale_(opt);                          // optional: before clipping, so clip sees true gradients
//   optim::clip_grad_norm_(params, 1.0);
//   scaler.step(opt);                              // opt.step() unless a gradient is not finite
//   scaler.update();
//
// bf16 has f32's exponent range and needs no scaler; `enabled = false` makes every call a pass-through, so
// one loop serves f32, bf16 and f16.
#include <string>

#include "optim/optimizer.h"

namespace liandan::optim {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16, torch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions opt = {});
  // loss·S (loss unchanged when disabled).
  Tensor scale(const Tensor& loss) const;
  // Divides the optimizer's gradients by S in place and records whether any is not finite. Once per step;
  // step() calls it when the loop has not.
  void unscale_(Optimizer& opt);
  // opt.step() unless the gradients held an Inf/NaN; returns whether the optimizer stepped.
  bool step(Optimizer& opt);
  // Adjusts S after a step (backoff after a skipped step, growth after growth_interval clean ones) and
  // starts the next step.
  void update();

  double get_scale() const { return enabled() ? scale_ : 1.0; }
  bool enabled() const { return opt_.enabled; }
  bool found_inf() const { return found_inf_; }  // of the current step (after unscale_/step)
  int64_t growth_tracker() const { return tracker_; }
  int64_t skipped_steps() const { return skipped_; }  // since construction (or the loaded state)

  // "grad_scaler.scale", "grad_scaler.growth_tracker", "grad_scaler.skipped" (f64 scalars), for checkpoints.
  NamedTensors state_dict() const;
  void load_state_dict(const NamedTensors& dict, const std::string& source = "state dict");

 private:
  GradScalerOptions opt_;
  double scale_;
  int64_t tracker_ = 0, skipped_ = 0;
  bool unscaled_ = false, found_inf_ = false;
};

}  // namespace liandan::optim
