// Multi-tensor optimizer updates on CUDA: one launch updates up to kListMax parameters (a model's ~150 tensors
// take a handful of launches, not ~150 — launch overhead dominates the small ones). The tensors travel in the
// kernel's arguments (4 KiB) as a TensorList (core/cuda/common.cuh).
// - Adam/AdamW: elementwise, line for line the CPU pass in optim/adam.cpp (same order of operations, in the
//   parameter's precision), so a GPU run follows the CPU trajectory up to fused multiply-adds.
// - Amos: a warp per row of θ viewed as [rows, inner]: the row's mean of clipped g² is a warp sum (a fixed
//   butterfly: deterministic), the row's scalars come from optim/amos_row.h (the CPU's own code), then the row
//   is updated. Factored slots make rows an output channel each; a vector is one row.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "optim/amos_row.h"

namespace liandan::cuda_impl {
namespace {

// ---------------------------------------------------------------------------------------------- Adam / AdamW

constexpr int64_t kAdamChunk = int64_t(kThreads) * 16;  // elements per block

template <class T>
struct AdamItem {
  T* p;
  const T* g;
  T *m, *v, *vmax;
  int64_t n;
  T keep, w1, b2, w2, l2, bc2_sqrt, eps, neg_step;
};

static_assert(sizeof(TensorList<AdamItem<double>>) <= 4096, "a kernel's arguments are at most 4 KiB");

template <class T, bool kAmsgrad>
__global__ void adam_kernel(TensorList<AdamItem<T>> l) {
  int k = list_entry(l, blockIdx.x);
  const AdamItem<T>& a = l.item[k];
  int64_t begin = (blockIdx.x - l.block_start[k]) * kAdamChunk;
  int64_t end = begin + kAdamChunk < a.n ? begin + kAdamChunk : a.n;
  T *p = a.p, *m = a.m, *v = a.v;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    T gi = a.g[i] + a.l2 * p[i];
    T pi = p[i] * a.keep;
    T mi = m[i] + a.w1 * (gi - m[i]);  // lerp(m, g, 1−β1)
    T vi = v[i] * a.b2 + a.w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    if (kAmsgrad) vi = a.vmax[i] = a.vmax[i] > vi ? a.vmax[i] : vi;
    T denom = ::sqrt(vi) / a.bc2_sqrt + a.eps;
    p[i] = pi + a.neg_step * mi / denom;
  }
}

template <class T>
void launch_adam(const std::vector<AdamTensor>& ts, bool amsgrad) {
  cudaStream_t stream = stream_of(ts[0].p);
  auto ptr = [](const Tensor& t) { return t.defined() ? static_cast<T*>(t.device_data()) : nullptr; };
  auto make = [&](const AdamTensor& t, AdamItem<T>& it) -> int64_t {
    const AdamStepArgs& a = t.args;
    it = {ptr(t.p), ptr(t.g), ptr(t.m), ptr(t.v), ptr(t.vmax), t.p.numel(), T(1 - a.decay), T(1 - a.beta1),
          T(a.beta2), T(1 - a.beta2), T(a.l2), T(a.bc2_sqrt), T(a.eps), T(-(a.lr / a.bc1))};
    return (it.n + kAdamChunk - 1) / kAdamChunk;
  };
  auto launch = [&](const TensorList<AdamItem<T>>& l, int blocks) {
    if (amsgrad) adam_kernel<T, true><<<blocks, kThreads, 0, stream>>>(l);
    else adam_kernel<T, false><<<blocks, kThreads, 0, stream>>>(l);
    LD_CUDA_LAUNCHED("adam");
  };
  for_lists<AdamItem<T>>(ts, make, launch);
}

// ---------------------------------------------------------------------------------------------------- Amos

constexpr int kAmosRowsPerBlock = kThreads / 32;  // a warp per row

template <class T>
struct AmosItem {
  T* p;
  const T* g;
  T *v, *b, *u;
  int64_t rows, inner;
  double xi, eta, lambda, bias_correction;
};

static_assert(sizeof(TensorList<AmosItem<double>>) + sizeof(AmosStepArgs) <= 4096, "kernel arguments over 4 KiB");

template <class T>
__global__ void amos_kernel(TensorList<AmosItem<T>> l, AmosStepArgs o) {
  int k = list_entry(l, blockIdx.x);
  const AmosItem<T>& a = l.item[k];
  int64_t r = int64_t(blockIdx.x - l.block_start[k]) * kAmosRowsPerBlock + (threadIdx.x >> 5);
  if (r >= a.rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x & 31;
  const T clip = T(o.clip_value);
  auto clipped = [clip](T x) { return clip > T(0) ? (x < -clip ? -clip : x > clip ? clip : x) : x; };
  T* pr = a.p + r * a.inner;
  const T* gr = a.g + r * a.inner;
  double v0 = double(a.v[r]), b0 = double(a.b[r]);  // read by every lane; lane 0 writes them back below
  double ss = 0;
  for (int64_t i = lane; i < a.inner; i += 32) {
    double gi = double(clipped(gr[i]));
    ss += gi * gi;
  }
  ss = warp_sum(ss);
  optim::AmosRow row = optim::amos_row(v0, b0, ss / double(a.inner), a.xi, a.eta, a.lambda, a.bias_correction,
                                       {o.beta, o.epsilon, o.c_coef, o.d_coef, o.finetune_rate});
  __syncwarp();  // every lane's reads of v[r] and b[r] are done (a shuffle orders execution, not memory)
  if (lane == 0) {
    a.v[r] = T(row.v);
    a.b[r] = T(row.b);
  }
  const T A = T(row.A), B = T(row.B);
  if (a.u) {
    const T mu = T(o.momentum), one_minus_mu = T(1 - o.momentum);
    T* ur = a.u + r * a.inner;
    for (int64_t i = lane; i < a.inner; i += 32) {
      ur[i] = mu * ur[i] + one_minus_mu * (-A * clipped(gr[i]) - B * pr[i]);
      pr[i] += ur[i];
    }
  } else {
    for (int64_t i = lane; i < a.inner; i += 32) pr[i] += -A * clipped(gr[i]) - B * pr[i];
  }
}

template <class T>
void launch_amos(const std::vector<AmosTensor>& ts, const AmosStepArgs& o) {
  cudaStream_t stream = stream_of(ts[0].p);
  auto ptr = [](const Tensor& t) { return t.defined() ? static_cast<T*>(t.device_data()) : nullptr; };
  auto make = [&](const AmosTensor& t, AmosItem<T>& it) -> int64_t {
    it = {ptr(t.p), ptr(t.g), ptr(t.v), ptr(t.b), ptr(t.u), t.rows, t.inner, t.xi, t.eta, t.lambda, t.bias_correction};
    return t.p.numel() == 0 ? 0 : (t.rows + kAmosRowsPerBlock - 1) / kAmosRowsPerBlock;
  };
  auto launch = [&](const TensorList<AmosItem<T>>& l, int blocks) {
    amos_kernel<T><<<blocks, kThreads, 0, stream>>>(l, o);
    LD_CUDA_LAUNCHED("amos");
  };
  for_lists<AmosItem<T>>(ts, make, launch);
}

// Every tensor of every entry on the first parameter's device and in its dtype, contiguous.
template <class Entry>
DType checked_dtype(const std::vector<Entry>& ts, const char* op, std::initializer_list<Tensor Entry::*> fields) {
  const Tensor& p0 = ts[0].p;
  for (const Entry& e : ts)
    for (Tensor Entry::*f : fields) {
      const Tensor& t = e.*f;
      if (!t.defined()) continue;
      LD_CHECK(t.device() == p0.device() && t.dtype() == p0.dtype() && t.is_contiguous(), op, " on CUDA: a tensor on ",
               t.device().str(), " / ", dtype_name(t.dtype()), " (contiguous: ", t.is_contiguous(),
               ") among parameters on ", p0.device().str(), " / ", dtype_name(p0.dtype()));
    }
  LD_CHECK(p0.dtype() == DType::f32 || p0.dtype() == DType::f64, op, " on CUDA: expected f32 or f64 parameters, got ",
           dtype_name(p0.dtype()));
  return p0.dtype();
}

}  // namespace

void adam_step(const std::vector<AdamTensor>& ts) {
  if (ts.empty()) return;
  DType dt = checked_dtype(ts, "Adam", {&AdamTensor::p, &AdamTensor::g, &AdamTensor::m, &AdamTensor::v, &AdamTensor::vmax});
  bool amsgrad = ts[0].vmax.defined();
  for (const AdamTensor& t : ts) LD_CHECK(t.vmax.defined() == amsgrad, "Adam on CUDA: amsgrad state on some parameters only");
  if (dt == DType::f32) launch_adam<float>(ts, amsgrad);
  else launch_adam<double>(ts, amsgrad);
}

void amos_step(const std::vector<AmosTensor>& ts, const AmosStepArgs& a) {
  if (ts.empty()) return;
  DType dt = checked_dtype(ts, "Amos", {&AmosTensor::p, &AmosTensor::g, &AmosTensor::v, &AmosTensor::b, &AmosTensor::u});
  for (const AmosTensor& t : ts)
    LD_CHECK(t.v.numel() == t.rows && t.b.numel() == t.rows && t.rows * t.inner == t.p.numel(),
             "Amos on CUDA: slots of ", t.v.numel(), " rows for a parameter of ", t.p.numel(), " elements");
  if (dt == DType::f32) launch_amos<float>(ts, a);
  else launch_amos<double>(ts, a);
}

}  // namespace liandan::cuda_impl
