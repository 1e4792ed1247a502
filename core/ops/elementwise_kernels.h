#pragma once
// The elementwise family's device kernels, as registry slots (core/dispatch.h): defined in
// core/ops/elementwise.cpp, filled for CUDA by core/cuda/elementwise.cu. (They were DeviceBackend entries with a
// forwarder each in core/cuda/backend.cu.) Tensors are on the kernel's device; outputs preallocated. Included by
// .cu files: C++17.
#include <vector>

#include "core/dispatch.h"
#include "core/tensor.h"

namespace liandan {

// A unary kernel is named by its op (core/ops/unary_ops.h's list: "exp", "mul_scalar", "clamp", …) and carries up
// to two scalar parameters (a scalar operand, clamp's bounds, softplus's beta and threshold, elu's alpha).
struct Elementwise {
  const char* name;
  double p0 = 0, p1 = 0;
};

namespace kernels {

// y = f(x); x contiguous with y's shape. (Profiled under the op's name.)
LD_DECLARE_KERNEL(unary, void(const Elementwise& op, const Tensor& x, const Tensor& y));
// dx = f'(x, y, g) for y = f(x); all contiguous, one shape. (Profiled as "<op> backward".)
LD_DECLARE_KERNEL(unary_backward, void(const Elementwise& op, const Tensor& x, const Tensor& y, const Tensor& g,
                                       const Tensor& dx));
// out = f(a, b) with a and b broadcast to out's shape (any strides; out may be a itself: Tensor::add_).
LD_DECLARE_KERNEL(binary, void(const char* op, const Tensor& a, const Tensor& b, const Tensor& out));
// out = ∂f/∂(a if which == 0 else b) · g, at out's shape (= g's shape; a and b broadcast to it).
LD_DECLARE_KERNEL(binary_backward, void(const char* op, int which, const Tensor& a, const Tensor& b, const Tensor& g,
                                        const Tensor& out));
// out = cond != 0 ? a : b, all three broadcast to out's shape (any strides; cond in a's dtype).
LD_DECLARE_KERNEL(where, void(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out));
// ys[i] ← a·ys[i] + b·xs[i] for every i (xs empty: ys[i] ← a·ys[i]), all in a few multi-tensor launches; pairs
// contiguous, of one dtype. (EMA updates, gradient unscaling and clipping of a whole model.)
LD_DECLARE_KERNEL(foreach_axpby, void(const std::vector<Tensor>& ys, const std::vector<Tensor>& xs, double a,
                                      double b));
// y = [residual +] act(h + bias) over contiguous rows of N (bias_act, core/ops.h; act "none", "gelu" or
// "gelu_tanh"; residual may be undefined), and its backward: dh, and dbias as deterministic sums over the rows
// (g in y's dtype).
LD_DECLARE_KERNEL(bias_act, void(const Tensor& h, const Tensor& bias, const char* act, const Tensor& residual,
                                 const Tensor& y));
LD_DECLARE_KERNEL(bias_act_backward, void(const Tensor& h, const Tensor& bias, const Tensor& g, const char* act,
                                          const Tensor& dh, const Tensor& dbias));

}  // namespace kernels
}  // namespace liandan
