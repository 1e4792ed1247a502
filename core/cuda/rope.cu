// RoPE on CUDA (core/ops/rope.h has the math): one thread per (row, pair) rotates the pair by its table row's
// cos/sin, and one per passed-through dim copies it; sign = −1 is the inverse rotation (the backward). The
// table row of x's row r comes from r's index over x's leading dims and the table's broadcast strides, and x's rows
// may be strided views (q and k taken out of a fused QKV projection are read in place).
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {
namespace {

// T: x's and y's element type, C: the tables' (T, or f32 for bf16/f16 x, computed in f32).
template <class T, class C>
__global__ void rope_kernel(const T* x, T* y, const C* c, const C* s, StridedIndex x_row, StridedIndex table_row,
                            int64_t R, int64_t D, int64_t P, bool half, C sign) {
  int64_t per_row = D - P;  // P pairs, then D − 2P copies
  int64_t n = R * per_row;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = t / per_row, j = t % per_row;
    const T* xr = x + x_row.offset(r);
    T* yr = y + r * D;
    if (j >= P) {
      yr[P + j] = xr[P + j];  // dim 2P + (j − P)
      continue;
    }
    int64_t tr = table_row.offset(r) * P;
    int64_t ia = half ? j : 2 * j, ib = half ? j + P : 2 * j + 1;
    C a = widen(xr[ia]), b = widen(xr[ib]), ci = c[tr + j], si = sign * s[tr + j];
    yr[ia] = narrow<T>(a * ci - b * si);
    yr[ib] = narrow<T>(a * si + b * ci);
  }
}

}  // namespace

void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& y, const Shape& lead,
          const Shape& table_strides, bool half, double sign) {
  int64_t D = x.shape().back(), P = cos.shape().back(), R = D ? x.numel() / D : 0;
  if (R == 0 || D == 0) return;
  StridedIndex tr = strided_index(lead.empty() ? Shape{1} : lead, lead.empty() ? Shape{0} : table_strides, "rope");
  LD_CHECK(x.strides().back() == 1, "rope on CUDA: x's last dim must be contiguous, got strides ",
           shape_str(x.strides()));
  Shape xs(x.strides().begin(), x.strides().end() - 1);
  StridedIndex xr = strided_index(lead.empty() ? Shape{1} : lead, lead.empty() ? Shape{0} : xs, "rope");
  auto launch = [&](auto t, auto c) {
    using T = decltype(t);
    using C = decltype(c);
    rope_kernel<T, C><<<blocks_for(R * (D - P)), kThreads, 0, stream_of(y)>>>(
        static_cast<const T*>(x.device_data()), static_cast<T*>(y.device_data()), static_cast<const C*>(cos.device_data()),
        static_cast<const C*>(sin.device_data()), xr, tr, R, D, P, half, C(sign));
  };
  if (x.dtype() == DType::bf16) launch(__nv_bfloat16(), float());
  else if (x.dtype() == DType::f16) launch(__half(), float());
  else LD_CUDA_FLOAT(x.dtype(), "rope", [&] { launch(scalar_t(), scalar_t()); });
  LD_CUDA_LAUNCHED("rope");
}

}  // namespace liandan::cuda_impl
