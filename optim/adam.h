#pragma once
// Adam and AdamW with exactly torch.optim's semantics (algorithms.md §3), per parameter and step:
//   AdamW: θ ← θ·(1 − lr·wd)                         (decoupled decay, current lr, before the moments)
//   Adam:  g ← g + wd·θ                               (L2: the decay enters the gradient)
//   m ← m + (1−β1)(g − m);  v ← β2·v + (1−β2)·g²;  (amsgrad: v_max ← max(v_max, v), used below)
//   denom = √v / √(1−β2^t) + eps                      (eps outside the sqrt; bias terms in double)
//   θ ← θ − (lr / (1−β1^t)) · m / denom
// Each update is one fused pass over the parameter (all four arrays read once), split over threads; on a GPU
// one multi-tensor kernel updates all of a device's parameters in a few launches.
#include "optim/kernels.h"
#include "optim/optimizer.h"

namespace liandan::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: L2 coefficient; AdamW: decoupled (see AdamW's default)
  bool amsgrad = false;
  Strategy strategy;  // Su's per-tensor lr / tied weight decay (optim/optimizer.h)
  // true: the fused pass (CPU) or fused kernel (CUDA). false: the update in tensor ops (torch's "foreach"
  // form; what a GPU runs for the per-tensor-lr strategy), kept selectable so tests compare the two.
  bool fused = true;
};

class Adam : public Optimizer {
 public:
  Adam(const NamedParams& params, AdamOptions opt = {});
  Adam(const std::vector<Tensor>& params, AdamOptions opt = {}) : Adam(name_params(params), opt) {}
  Adam(std::vector<ParamGroup> groups, AdamOptions opt = {});
  const AdamOptions& options() const { return opt_; }

 protected:
  Adam(std::string type_name, std::vector<ParamGroup> groups, AdamOptions opt, bool decoupled);
  void init_state(ParamState& s, const ParamGroup& g) override;
  void update(ParamState& s, const ParamGroup& g, const Tensor& grad) override;
  void update_all(std::vector<PendingUpdate>& due) override;

 private:
  AdamStepArgs step_args(const ParamState& s, const ParamGroup& g) const;
  bool on_device_kernel(const ParamState& s) const;
  AdamOptions opt_;
  bool decoupled_;
};

// AdamW's options: the same fields, with torch's default weight_decay 1e-2.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  Strategy strategy;
  bool fused = true;
  operator AdamOptions() const { return {lr, beta1, beta2, eps, weight_decay, amsgrad, strategy, fused}; }
};

class AdamW : public Adam {
 public:
  AdamW(const NamedParams& params, AdamWOptions opt = {});
  AdamW(const std::vector<Tensor>& params, AdamWOptions opt = {}) : AdamW(name_params(params), opt) {}
  AdamW(std::vector<ParamGroup> groups, AdamWOptions opt = {});
};

}  // namespace liandan::optim
