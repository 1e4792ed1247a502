#include "optim/schedule.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace liandan::optim {

Schedule constant_schedule() {
  return [](int64_t) { return 1.0; };
}

Schedule inverse_square(double half_life) {
  LD_CHECK(std::isfinite(half_life) && half_life > 0, "inverse_square: half_life must be a finite number > 0, got ",
           half_life);
  double a = (std::numbers::sqrt2 - 1) / half_life;  // α₀p
  return [a](int64_t t) {
    double x = a * double(t) + 1;
    return 1 / (x * x);
  };
}

Schedule inverse_time(double half_life) {
  LD_CHECK(std::isfinite(half_life) && half_life > 0, "inverse_time: half_life must be a finite number > 0, got ",
           half_life);
  double a = 1 / half_life;  // 2α₀p₀
  return [a](int64_t t) { return 1 / (a * double(t) + 1); };
}

Schedule cosine(int64_t total, double min_factor) {
  LD_CHECK(total > 0, "cosine: total steps must be > 0, got ", total);
  LD_CHECK(min_factor >= 0 && min_factor <= 1, "cosine: min_factor must be in [0, 1], got ", min_factor);
  return [=](int64_t t) {
    if (t >= total) return min_factor;
    return min_factor + (1 - min_factor) * 0.5 * (1 + std::cos(std::numbers::pi * double(t) / double(total)));
  };
}

Schedule linear_decay(int64_t total, double end_factor) {
  LD_CHECK(total > 0, "linear_decay: total steps must be > 0, got ", total);
  LD_CHECK(end_factor >= 0 && end_factor <= 1, "linear_decay: end_factor (min_factor) must be in [0, 1], got ", end_factor);
  return [=](int64_t t) {
    if (t >= total) return end_factor;
    return 1 + (end_factor - 1) * double(t) / double(total);
  };
}

Schedule step_decay(int64_t step_size, double gamma) {
  LD_CHECK(step_size > 0, "step_decay: step_size must be > 0, got ", step_size);
  LD_CHECK(gamma >= 0 && gamma <= 1, "step_decay: gamma must be in [0, 1] (a decay), got ", gamma);
  return [=](int64_t t) { return std::pow(gamma, double(t / step_size)); };
}

Schedule warmup(int64_t warmup_steps, Schedule then) {
  LD_CHECK(warmup_steps >= 0, "warmup: warmup steps must be >= 0, got ", warmup_steps);
  return [=](int64_t t) {
    if (t < warmup_steps) return double(t + 1) / double(warmup_steps);
    return then(t - warmup_steps);
  };
}

Scheduler::Scheduler(Optimizer& opt, Schedule s) : opt_(&opt), schedule_(std::move(s)) {
  opt_->set_lr_factor(schedule_(0));
}

void Scheduler::step() {
  ++t_;
  opt_->set_lr_factor(schedule_(t_));
}

void Scheduler::set_steps_taken(int64_t t) {
  t_ = t;
  opt_->set_lr_factor(schedule_(t_));
}

}  // namespace liandan::optim
