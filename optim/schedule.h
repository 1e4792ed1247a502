#pragma once
// Learning-rate (and weight-decay) schedules: a schedule is a factor s(t) ≥ 0 of the step count t
// (the number of optimizer steps already taken, so the first step uses s(0)); the scheduler sets each
// group's lr = initial_lr · s(t). Compose them: warmup(1000, cosine(9000)).
//
// Su's Amos-derived schedules (kexue.fm/archives/9344), parameterised by the half-life T (s(T) = ½):
//   inverse_square(T):  s(t) = 1/(α₀p·t + 1)²   with α₀p = (√2 − 1)/T   (steady convergence)
//   inverse_time(T):    s(t) = 1/(2α₀p₀·t + 1)  with 2α₀p₀ = 1/T        (slowing convergence; Su's pick)
// With Strategy::tie_weight_decay the decoupled decay ρ_t = α₀²/(2q)·s(t) follows the same factor.
#include <cstdint>
#include <functional>

#include "optim/optimizer.h"

namespace liandan::optim {

using Schedule = std::function<double(int64_t t)>;

Schedule constant_schedule();
Schedule inverse_square(double half_life);
Schedule inverse_time(double half_life);
// Cosine from 1 to `min_factor` over `total` steps, then `min_factor`.
Schedule cosine(int64_t total, double min_factor = 0.0);
// Linear from 1 to `end_factor` over `total` steps, then `end_factor`.
Schedule linear_decay(int64_t total, double end_factor = 0.0);
// Multiplies by `gamma` every `step_size` steps.
Schedule step_decay(int64_t step_size, double gamma);
// Linear warm-up: s(t) = (t+1)/warmup for t < warmup, then `then(t − warmup)` (constant by default).
Schedule warmup(int64_t warmup_steps, Schedule then = constant_schedule());

// Drives an optimizer's learning rates: call step() after each optimizer step.
class Scheduler {
 public:
  Scheduler(Optimizer& opt, Schedule s);
  void step();
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t);  // resume: re-applies s(t)
  double factor() const { return schedule_(t_); }

 private:
  Optimizer* opt_;
  Schedule schedule_;
  int64_t t_ = 0;
};

}  // namespace liandan::optim
