#pragma once
// One element of an AdamW/Adam step, written once: the CPU pass (optim/adam.cpp) and the multi-tensor CUDA
// kernel (optim/adam.cu) both call it, as optim/amos_row.h is shared by Amos's. Every line mirrors torch's
// tensor ops in the same order and precision (T), so trajectories agree with torch.optim to the last ulp (a GPU
// run follows up to fused multiply-adds). Math: optim/adam.h. Included by .cu files: C++17.
#include <cmath>

#include "core/host_device.h"

namespace liandan::optim {

// A step's scalars (optim/kernels.h's AdamStepArgs) in the parameter's precision. (keep = 1 or l2 = 0 when a
// decay is off changes no value, and keeps one branch-free loop that vectorizes.)
template <class T>
struct AdamCoefs {
  T keep, w1, b2, w2, l2, bc2_sqrt, eps, neg_step, inv_bc1;
};
template <class T, class Args>
AdamCoefs<T> adam_coefs(const Args& a) {
  return {T(1 - a.decay),     T(1 - a.beta1), T(a.beta2), T(1 - a.beta2),        T(a.l2),
          T(a.bc2_sqrt),      T(a.eps),       T(-(a.lr / a.bc1)), T(1.0 / a.bc1)};
}

// Decay and moments of one element: m and v (and vmax with amsgrad) updated in place; returns the denominator
// √v̂ / √(1 − β2^t) + eps, with the decayed parameter in `p_decayed` and the new first moment in `m_new`. The
// step is then p_decayed + neg_step·m_new / denom, or the direction (m_new·inv_bc1) / denom.
template <class T, bool kAmsgrad>
LD_HOST_DEVICE_INLINE T adam_element(T p, T g, T& m, T& v, T* vmax, const AdamCoefs<T>& c, T& p_decayed, T& m_new) {
  T gi = g + c.l2 * p;
  p_decayed = p * c.keep;
  T mi = m + c.w1 * (gi - m);  // lerp(m, g, 1−β1)
  T vi = v * c.b2 + c.w2 * gi * gi;
  m = mi;
  v = vi;
  if constexpr (kAmsgrad) vi = *vmax = *vmax < vi ? vi : *vmax;  // std::max(vmax, v): a NaN v keeps vmax
  m_new = mi;
#if defined(__CUDA_ARCH__)
  return ::sqrt(vi) / c.bc2_sqrt + c.eps;
#else
  return std::sqrt(vi) / c.bc2_sqrt + c.eps;
#endif
}

}  // namespace liandan::optim
