#pragma once
// Amos (Tian & Parikh 2022; reference: google-research/jestimator `amos.py`), algorithms.md §4 and
// seeds-math.md article 8. Per parameter θ with gradient g, global rate ξ (the group's lr), expected
// scale η̃ (the group's eta, or derived from the init: RMS for matrices, 0.5 for vectors), step t ≥ 1:
//   g   ← clip(g, ±clip_value)                                   (optional, element-wise)
//   ḡ²  = mean of g² over the axes the slot shape reduces       (slots v, b: see below)
//   v   ← β·v + (1−β)·ḡ²;   r = (1 − β^t) / max(v, ε)
//   γ   = √fr · c_t · ξ²·r·ḡ²,        c_t = 1/√(1 + c·√ξ·b)        (adaptive weight decay)
//   α   = ξ·η̃;                        d_t = 1/(1 + d·√α·b)         (decay of the learning rate)
//   Δθ  = fr · d_t · (−α·√r·g − (γ/2 + λ)·θ);   b ← b + γ·(fr + b)
//   u   ← μ·u + (1−μ)·Δθ, Δθ ← u                                 (optional momentum)
//   θ   ← θ + Δθ
// fr is the fine-tune rate (1 = the paper), λ the group's weight_decay (`extra_l2`, default 0).
//
// Slots: "factored" (default) keeps one v and b per leading index of every tensor of rank ≥ 2 —
// per output channel of a Linear [out, in] or Conv2d [out, in, kh, kw], per row of an Embedding — and
// one scalar for vectors. Without momentum the slots are then a fraction of a percent of AdamW's two
// full-size moments (0.3 % on the reference RoFormer LM); momentum adds one full-size buffer (≈ 50 %). A slot shape
// keeps a prefix of the parameter's dims and reduces the rest ([out, 1, 1, 1]; [] for a scalar);
// `slot_shape` may choose any such shape per parameter.
#include "optim/optimizer.h"

namespace liandan::optim {

struct AmosOptions {
  double lr = 1e-2;          // ξ: about 1/√N for N independent batches (jestimator's README)
  double beta = 0.999;       // 1−β of the order of lr
  double c_coef = 0.25;      // ζ for the weight-decay decay
  double d_coef = 0.25;      // ζ for the learning-rate decay
  double extra_l2 = 0.0;     // λ (a group's weight_decay overrides it)
  double epsilon = std::ldexp(1.0, -125);  // as written in the reference ("smallest normal": f32 has 2^-126)
  double momentum = 0.0;     // 0 = no momentum slot
  double clip_value = 0.0;   // 0 = no clipping
  double finetune_rate = 1.0;
  double init_b = 0.0;       // a large b (∝ pre-training epochs) keeps restored weights from drifting
  bool factored = true;      // reduced-shape slots (see above); false = full-shape v and b
  // true: the fused row pass on the CPU, the multi-tensor kernel on a GPU. false: the same update in tensor
  // ops (torch's "foreach" form), kept selectable so tests compare the two.
  bool fused = true;
  // Optional per-parameter overrides: expected scale η̃ and slot shape (return {} to keep the default).
  std::function<double(const std::string& name, const Tensor& p)> eta;
  std::function<Shape(const std::string& name, const Shape& shape)> slot_shape;
};

class Amos : public Optimizer {
 public:
  Amos(const NamedParams& params, AmosOptions opt = {});
  Amos(const std::vector<Tensor>& params, AmosOptions opt = {}) : Amos(name_params(params), opt) {}
  Amos(std::vector<ParamGroup> groups, AmosOptions opt = {});
  const AmosOptions& options() const { return opt_; }
  // The slot shape used for a parameter (factored or full, or the override).
  Shape slot_shape_for(const std::string& name, const Shape& shape) const;

 protected:
  void init_state(ParamState& s, const ParamGroup& g) override;
  void update(ParamState& s, const ParamGroup& g, const Tensor& grad) override;
  void update_all(std::vector<PendingUpdate>& due) override;

 private:
  AmosOptions opt_;
};

}  // namespace liandan::optim
