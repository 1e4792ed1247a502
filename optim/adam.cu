// The multi-tensor AdamW/Adam update on CUDA (optim::adam_step, optim/kernels.h): one launch updates up to
// kListMax parameters (a model's ~150 tensors take a handful of launches, not ~150 — launch overhead dominates
// the small ones). The tensors travel in the kernel's arguments (4 KiB) as a TensorList (core/cuda/common.cuh).
// Elementwise, with the CPU pass's own element formula (optim/adam_row.h), so a GPU run follows the CPU
// trajectory up to fused multiply-adds.
#include "core/cuda/common.cuh"
#include "optim/adam_row.h"
#include "optim/kernels.h"

namespace liandan::optim {
namespace {

using namespace cuda_impl;

// ---------------------------------------------------------------------------------------------- Adam / AdamW

constexpr int64_t kAdamChunk = int64_t(kThreads) * 16;  // elements per block

template <class T>
struct AdamItem {
  T* p;
  const T* g;
  T *m, *v, *vmax;
  int64_t n;
  AdamCoefs<T> c;
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
    T pi, mi;
    T denom = adam_element<T, kAmsgrad>(p[i], a.g[i], m[i], v[i], kAmsgrad ? a.vmax + i : nullptr, a.c, pi, mi);
    p[i] = pi + a.c.neg_step * mi / denom;
  }
}

template <class T>
void launch_adam(const std::vector<AdamTensor>& ts, bool amsgrad) {
  cudaStream_t stream = stream_of(ts[0].p);
  auto ptr = [](const Tensor& t) { return t.defined() ? static_cast<T*>(t.device_data()) : nullptr; };
  auto make = [&](const AdamTensor& t, AdamItem<T>& it) -> int64_t {
    it = {ptr(t.p), ptr(t.g), ptr(t.m), ptr(t.v), ptr(t.vmax), t.p.numel(), adam_coefs<T>(t.args)};
    return (it.n + kAdamChunk - 1) / kAdamChunk;
  };
  auto launch = [&](const TensorList<AdamItem<T>>& l, int blocks) {
    if (amsgrad) adam_kernel<T, true><<<blocks, kThreads, 0, stream>>>(l);
    else adam_kernel<T, false><<<blocks, kThreads, 0, stream>>>(l);
    LD_CUDA_LAUNCHED("adam");
  };
  for_lists<AdamItem<T>>(ts, make, launch);
}

void adam_step_cuda(const std::vector<AdamTensor>& ts) {
  if (ts.empty()) return;
  DType dt = checked_list_dtype(ts, "Adam", {&AdamTensor::p, &AdamTensor::g, &AdamTensor::m, &AdamTensor::v, &AdamTensor::vmax});
  bool amsgrad = ts[0].vmax.defined();
  for (const AdamTensor& t : ts) LD_CHECK(t.vmax.defined() == amsgrad, "Adam on CUDA: amsgrad state on some parameters only");
  if (dt == DType::f32) launch_adam<float>(ts, amsgrad);
  else launch_adam<double>(ts, amsgrad);
}

}  // namespace

LD_KERNEL_FILE(optim_adam);
LD_REGISTER_KERNEL(adam_step, CUDA, adam_step_cuda);

}  // namespace liandan::optim
