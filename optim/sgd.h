#pragma once
// SGD with torch.optim.SGD's semantics:
//   g ← g + wd·θ;  buf ← g at the first step, else μ·buf + (1 − dampening)·g
//   g ← g + μ·buf (Nesterov) or buf;  θ ← θ − lr·g
#include "optim/optimizer.h"

namespace liandan::optim {

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;  // L2 (torch's SGD)
  Strategy strategy;          // per-tensor lr / tied decoupled decay (optim/optimizer.h)
  bool fused = true;          // false: the update in tensor ops, as on a GPU (tests compare the two)
};

class SGD : public Optimizer {
 public:
  SGD(const NamedParams& params, SGDOptions opt = {});
  SGD(const std::vector<Tensor>& params, SGDOptions opt = {}) : SGD(name_params(params), opt) {}
  SGD(std::vector<ParamGroup> groups, SGDOptions opt = {});
  const SGDOptions& options() const { return opt_; }

 protected:
  void init_state(ParamState& s, const ParamGroup& g) override;
  void update(ParamState& s, const ParamGroup& g, const Tensor& grad) override;

 private:
  SGDOptions opt_;
};

}  // namespace liandan::optim
