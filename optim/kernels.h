#pragma once
// The optimizers' multi-tensor device kernels: their arguments and their registry slots (core/dispatch.h).
// The slots are defined beside the CPU passes (optim/adam.cpp, optim/amos.cpp) and filled for CUDA by
// optim/adam.cu and optim/amos.cu. Included by those .cu files: C++17, no host-only headers.
#include <cstdint>
#include <vector>

#include "core/dispatch.h"
#include "core/tensor.h"

namespace liandan::optim {

// One AdamW/Adam step's scalars (optim/adam.cpp): θ ← θ·(1 − decay) − lr/bc1 · m / (√v / bc2_sqrt + eps),
// with g ← g + l2·θ first.
struct AdamStepArgs {
  double lr, beta1, beta2, eps;
  double l2;     // added to the gradient (Adam's weight decay)
  double decay;  // decoupled: θ ← θ·(1 − decay)
  double bc1, bc2_sqrt;
};

// One parameter of a multi-tensor Adam/AdamW step: its tensors (contiguous, one dtype; vmax undefined without
// amsgrad) and its scalars (bias corrections differ between parameters that skipped steps; lr and decay between
// groups).
struct AdamTensor {
  Tensor p, g, m, v, vmax;
  AdamStepArgs args;
};

// One parameter of a multi-tensor Amos step (optim/amos.h): θ, its gradient, the slots v and b ([rows]: one
// entry per row of θ viewed as [rows, inner]) and momentum u (undefined without), with its group's lr ξ and
// weight decay λ, its expected scale η̃ and 1 − β^t.
struct AmosTensor {
  Tensor p, g, v, b, u;
  int64_t rows, inner;
  double xi, eta, lambda, bias_correction;
};
// The options every row reads (optim/amos_row.h's AmosRowOptions, with momentum and clipping).
struct AmosStepArgs {
  double beta, epsilon, c_coef, d_coef, finetune_rate, momentum, clip_value;
};

// Updates many parameters of one device and dtype in place, in a few kernel launches for all of them:
// Adam/AdamW elementwise as adam.cpp's fused pass; Amos with each row's mean g² reduced in a fixed order.
LD_DECLARE_KERNEL(adam_step, void(const std::vector<AdamTensor>&));
LD_DECLARE_KERNEL(amos_step, void(const std::vector<AmosTensor>&, const AmosStepArgs&));

}  // namespace liandan::optim
