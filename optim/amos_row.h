#pragma once
// The scalar part of an Amos step for one slot entry (a row of the parameter), in double: shared word for word
// by the CPU pass (optim/amos.cpp) and the multi-tensor CUDA kernel (optim/amos.cu), which nvcc compiles
// for the device. Math: optim/amos.h.
#include <cmath>

#include "core/host_device.h"

namespace liandan::optim {

// The options the row update reads (AmosOptions without its callbacks: device code copies it by value).
struct AmosRowOptions {
  double beta, epsilon, c_coef, d_coef, finetune_rate;
};

// A row's new slot values and its coefficients: θ_i += −A·g_i − B·θ_i for every element i of the row.
struct AmosRow {
  double v, b, A, B;
};

// v, b: the row's slots before the step; g2: the mean of its (clipped) g²; xi: the group's lr; eta: the
// parameter's expected scale; lambda: the group's weight decay; bias_correction = 1 − β^t.
LD_HOST_DEVICE inline AmosRow amos_row(double v, double b, double g2, double xi, double eta, double lambda,
                                       double bias_correction, const AmosRowOptions& o) {
  double vn = o.beta * v + (1 - o.beta) * g2;
  double r = bias_correction / (vn < o.epsilon ? o.epsilon : vn);  // std::max: a NaN v stays NaN
  double c = 1 / sqrt(1 + o.c_coef * sqrt(xi) * b);
  double fr = o.finetune_rate;
  double gamma = sqrt(fr) * c * xi * xi * r * g2;
  double alpha = xi * eta;
  double d = 1 / (1 + o.d_coef * sqrt(alpha) * b);
  return {vn, b + gamma * (fr + b), fr * d * alpha * sqrt(r), fr * d * (gamma / 2 + lambda)};
}

}  // namespace liandan::optim
