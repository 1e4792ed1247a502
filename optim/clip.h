#pragma once
// Gradient utilities used between backward() and step(): clipping, the non-finite check, and
// accumulation over micro-batches.
#include <optional>
#include <string>

#include "optim/optimizer.h"

namespace liandan::optim {

// Scales all gradients by min(1, max_norm/(‖g‖ + 1e-6)) — torch.nn.utils.clip_grad_norm_ — and returns
// the total norm before clipping (summed in double, in parameter order: deterministic).
double clip_grad_norm_(const NamedParams& params, double max_norm);
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);
// Clamps every gradient entry to [−v, v].
void clip_grad_value_(const NamedParams& params, double v);

// The total L2 norm of the gradients (double).
double grad_norm(const NamedParams& params);

// The name of the first parameter whose gradient (or, for the second, whose value) holds a NaN or Inf.
std::optional<std::string> first_nonfinite_grad(const NamedParams& params);
std::optional<std::string> first_nonfinite_param(const NamedParams& params);

// Gradient accumulation: the loss of each of k micro-batches is scaled by 1/k (so the summed gradient
// is the gradient of the mean over the whole batch) and the optimizer steps after every k-th one.
//   GradAccumulation acc(4);
//   for (auto& mb : micro_batches) { (loss(mb) * acc.loss_scale()).backward();
//                                    if (acc.micro_step()) { opt.step(); opt.zero_grad(); } }
class GradAccumulation {
 public:
  explicit GradAccumulation(int64_t micro_batches);
  double loss_scale() const { return 1.0 / double(k_); }
  // Counts one micro-batch; true when the accumulated gradient is complete.
  bool micro_step() { return ++i_ % k_ == 0; }
  int64_t micro_batches() const { return k_; }

 private:
  int64_t k_, i_ = 0;
};

}  // namespace liandan::optim
