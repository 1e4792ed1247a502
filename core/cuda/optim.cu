// Fused optimizer updates on CUDA: one pass over a parameter reads θ, g and the moments once and writes
// them once, line for line the CPU pass in optim/adam.cpp (same order of operations, in the parameter's
// precision), so a GPU run follows the CPU trajectory up to fused multiply-adds.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

template <class T, bool kAmsgrad>
__global__ void adam_kernel(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, T keep, T w1, T b2, T w2, T l2,
                            T bc2_sqrt, T eps, T neg_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T gi = g[i] + l2 * p[i];
    T pi = p[i] * keep;
    T mi = m[i] + w1 * (gi - m[i]);  // lerp(m, g, 1−β1)
    T vi = v[i] * b2 + w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if (kAmsgrad) vi = vmax[i] = vmax[i] > vi ? vmax[i] : vi;
    T denom = ::sqrt(vi) / bc2_sqrt + eps;
    p[i] = pi + neg_step * mi / denom;
  }
}

template <class T>
void launch_adam(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& vmax,
                 const AdamStepArgs& a) {
  int64_t n = p.numel();
  auto ptr = [](const Tensor& t) { return t.defined() ? static_cast<T*>(t.device_data()) : nullptr; };
  T keep = T(1 - a.decay), w1 = T(1 - a.beta1), b2 = T(a.beta2), w2 = T(1 - a.beta2), l2 = T(a.l2);
  T bc2 = T(a.bc2_sqrt), eps = T(a.eps), neg_step = T(-(a.lr / a.bc1));
  if (vmax.defined())
    adam_kernel<T, true><<<blocks_for(n), kThreads, 0, stream_of(p)>>>(ptr(p), ptr(g), ptr(m), ptr(v), ptr(vmax), n,
                                                                        keep, w1, b2, w2, l2, bc2, eps, neg_step);
  else
    adam_kernel<T, false><<<blocks_for(n), kThreads, 0, stream_of(p)>>>(ptr(p), ptr(g), ptr(m), ptr(v), nullptr, n,
                                                                         keep, w1, b2, w2, l2, bc2, eps, neg_step);
}

}  // namespace

void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const Tensor& vmax,
               const AdamStepArgs& a) {
  LD_CHECK(p.is_contiguous() && g.is_contiguous() && m.is_contiguous() && v.is_contiguous(),
           "Adam on CUDA: expected contiguous parameter, gradient and moments");
  for (const Tensor* t : {&g, &m, &v, &vmax})
    LD_CHECK(!t->defined() || (t->device() == p.device() && t->dtype() == p.dtype()),
             "Adam on CUDA: gradient or state on ", t->device().str(), " / ", dtype_name(t->dtype()),
             ", parameter on ", p.device().str(), " / ", dtype_name(p.dtype()));
  if (p.numel() == 0) return;
  if (p.dtype() == DType::f32) launch_adam<float>(p, g, m, v, vmax, a);
  else if (p.dtype() == DType::f64) launch_adam<double>(p, g, m, v, vmax, a);
  else LD_FAIL("Adam on CUDA: expected f32 or f64 parameters, got ", dtype_name(p.dtype()));
  LD_CUDA_LAUNCHED("adam");
}

}  // namespace liandan::cuda_impl
