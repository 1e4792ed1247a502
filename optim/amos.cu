// The multi-tensor Amos update on CUDA (optim::amos_step, optim/kernels.h): a warp per row of θ viewed as
// [rows, inner]: the row's mean of clipped g² is a warp sum (a fixed butterfly: deterministic), the row's scalars
// come from optim/amos_row.h (the CPU's own code), then the row is updated. Factored slots make rows an output
// channel each; a vector is one row. Up to kListMax parameters per launch, as a TensorList (core/cuda/common.cuh).
#include "core/cuda/common.cuh"
#include "optim/amos_row.h"
#include "optim/kernels.h"

namespace liandan::optim {
namespace {

using namespace cuda_impl;

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
  AmosRow row = amos_row(v0, b0, ss / double(a.inner), a.xi, a.eta, a.lambda, a.bias_correction,
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

void amos_step_cuda(const std::vector<AmosTensor>& ts, const AmosStepArgs& a) {
  if (ts.empty()) return;
  DType dt = checked_list_dtype(ts, "Amos", {&AmosTensor::p, &AmosTensor::g, &AmosTensor::v, &AmosTensor::b, &AmosTensor::u});
  for (const AmosTensor& t : ts)
    LD_CHECK(t.v.numel() == t.rows && t.b.numel() == t.rows && t.rows * t.inner == t.p.numel(),
             "Amos on CUDA: slots of ", t.v.numel(), " rows for a parameter of ", t.p.numel(), " elements");
  if (dt == DType::f32) launch_amos<float>(ts, a);
  else launch_amos<double>(ts, a);
}

}  // namespace

LD_KERNEL_FILE(optim_amos);
LD_REGISTER_KERNEL(amos_step, CUDA, amos_step_cuda);

}  // namespace liandan::optim
