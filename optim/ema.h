#pragma once
// An exponential moving average of weights (used for sampling in diffusion and for evaluation):
//   shadow ← decay·shadow + (1 − decay)·θ       after each optimizer step (update()).
// With `warmup`, the decay starts small: min(decay, (1 + n)/(10 + n)) at update n (as in many
// diffusion codebases), so the average is not dominated by the random init early on.
#include "optim/optimizer.h"

namespace liandan::optim {

class EMA {
 public:
  EMA(const NamedParams& params, double decay = 0.9999, bool warmup = false);
  void update();
  // Copies the averaged weights into `target` (same names and shapes), e.g. an evaluation model.
  void copy_to(const NamedParams& target) const;
  // Exchanges the live weights and the averages (call twice to restore): evaluate with EMA weights
  // in place without a second model.
  void swap();
  const NamedTensors& shadow() const { return shadow_; }
  int64_t updates() const { return n_; }
  double decay() const { return decay_; }
  // "ema.<name>" tensors plus "ema.__updates" (i64).
  NamedTensors state_dict() const;
  void load_state_dict(const NamedTensors& dict, const std::string& source = "state dict");

 private:
  NamedParams params_;
  NamedTensors shadow_;
  double decay_;
  bool warmup_;
  int64_t n_ = 0;
};

}  // namespace liandan::optim
