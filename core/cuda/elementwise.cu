// Elementwise kernels on CUDA: strided copies and fills, and the unary and binary ops of
// core/ops/elementwise.cpp found by name. The unary formulas are core/ops/unary_ops.h's functors, the CPU's own,
// run by one generic kernel; each binary formula transcribes the CPU lambda beside its op (same NaN rules, same
// torch conventions for ties and zeros), forward and derivative together.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <type_traits>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/ops/elementwise_kernels.h"
#include "core/ops/unary_ops.h"

namespace liandan::cuda_impl {
namespace {

// ---------------------------------------------------------------- unary ops

// The math core/ops/unary_ops.h's formulas call on the device: CUDA's libm.
struct DeviceMath {
  template <class T> __host__ __device__ static T exp(T x) { return ::exp(x); }
  template <class T> __host__ __device__ static T tanh(T x) { return ::tanh(x); }
  template <class T> __host__ __device__ static T sigmoid(T x) { return T(1) / (T(1) + ::exp(-x)); }
  template <class T> __host__ __device__ static T erf(T x) { return ::erf(x); }
  template <class T> __host__ __device__ static T log(T x) { return ::log(x); }
  template <class T> __host__ __device__ static T log1p(T x) { return ::log1p(x); }
  template <class T> __host__ __device__ static T sqrt(T x) { return ::sqrt(x); }
  template <class T> __host__ __device__ static T abs(T x) { return ::fabs(x); }
  template <class T> __host__ __device__ static T sin(T x) { return ::sin(x); }
  template <class T> __host__ __device__ static T cos(T x) { return ::cos(x); }
  template <class T> __host__ __device__ static T pow(T x, T e) { return ::pow(x, e); }
};

template <class F, class T>
__global__ void unary_kernel(const T* x, T* y, int64_t n, double p0, double p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = F::template f<DeviceMath>(x[i], p0, p1);
}

template <class F, class T>
__global__ void unary_backward_kernel(const T* x, const T* y, const T* g, T* dx, int64_t n, double p0, double p1) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = F::template d<DeviceMath>(x[i], y[i], g[i], p0, p1);
}

template <class F>
void launch_unary(const Elementwise& e, const Tensor& x, const Tensor& y) {
  int64_t n = y.numel();
  if (n == 0) return;
  LD_CUDA_FLOAT(x.dtype(), e.name, [&] {
    unary_kernel<F, scalar_t><<<blocks_for(n), kThreads, 0, stream_of(y)>>>(
        static_cast<const scalar_t*>(x.device_data()), static_cast<scalar_t*>(y.device_data()), n, e.p0, e.p1);
  });
  LD_CUDA_LAUNCHED(e.name);
}

template <class F>
void launch_unary_backward(const Elementwise& e, const Tensor& x, const Tensor& y, const Tensor& g, const Tensor& dx) {
  int64_t n = dx.numel();
  if (n == 0) return;
  LD_CUDA_FLOAT(x.dtype(), e.name, [&] {
    unary_backward_kernel<F, scalar_t><<<blocks_for(n), kThreads, 0, stream_of(dx)>>>(
        static_cast<const scalar_t*>(x.device_data()), static_cast<const scalar_t*>(y.device_data()),
        static_cast<const scalar_t*>(g.device_data()), static_cast<scalar_t*>(dx.device_data()), n, e.p0, e.p1);
  });
  LD_CUDA_LAUNCHED(e.name);
}

// Every op of unary_ops.h's list, by name.
struct UnaryKernels {
  const char* name;
  void (*forward)(const Elementwise&, const Tensor&, const Tensor&);
  void (*backward)(const Elementwise&, const Tensor&, const Tensor&, const Tensor&, const Tensor&);
};
#define LD_UNARY_ENTRY(op, F) {#op, launch_unary<unary_ops::F>, launch_unary_backward<unary_ops::F>},
const UnaryKernels kUnary[] = {LD_UNARY_OPS(LD_UNARY_ENTRY)};
#undef LD_UNARY_ENTRY

const UnaryKernels& unary_kernels(const char* name, Device d) {
  for (const auto& u : kUnary)
    if (std::strcmp(u.name, name) == 0) return u;
  no_device_kernel(name, d);
}

// ---------------------------------------------------------------- binary ops

enum class B : int { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };
struct BinaryName { const char* name; B op; };
constexpr BinaryName kBinary[] = {{"add", B::add}, {"sub", B::sub}, {"mul", B::mul}, {"div", B::div},
                                  {"pow", B::pow}, {"maximum", B::maximum}, {"minimum", B::minimum},
                                  {"eq", B::eq}, {"ne", B::ne}, {"lt", B::lt}, {"le", B::le}, {"gt", B::gt},
                                  {"ge", B::ge}};

B binary_code(const char* name, Device d) {
  for (const auto& b : kBinary)
    if (std::strcmp(b.name, name) == 0) return b.op;
  no_device_kernel(name, d);
}

template <class T>
__device__ T binary_f(B op, T u, T v) {
  switch (op) {
    case B::add: return u + v;
    case B::sub: return u - v;
    case B::mul: return u * v;
    case B::div: return u / v;
    case B::pow: return ::pow(u, v);
    case B::maximum: return (u != u || u > v) ? u : v;
    case B::minimum: return (u != u || u < v) ? u : v;
    case B::eq: return u == v ? 1 : 0;
    case B::ne: return u != v ? 1 : 0;
    case B::lt: return u < v ? 1 : 0;
    case B::le: return u <= v ? 1 : 0;
    case B::gt: return u > v ? 1 : 0;
    case B::ge: return u >= v ? 1 : 0;
  }
  return u;
}

// ∂f/∂u · g (which == 0) or ∂f/∂v · g (which == 1); comparisons have none.
template <class T>
__device__ T binary_d(B op, int which, T u, T v, T g) {
  switch (op) {
    case B::add: return g;
    case B::sub: return which == 0 ? g : -g;
    case B::mul: return which == 0 ? g * v : g * u;
    case B::div: return which == 0 ? g / v : -g * u / (v * v);
    case B::pow:
      if (which == 0) return v == 0 ? T(0) : g * v * ::pow(u, v - 1);
      return u == 0 ? T(0) : g * ::pow(u, v) * ::log(u);
    case B::maximum:
      if (which == 0) return u > v ? g : u == v ? g / 2 : T(0);
      return v > u ? g : u == v ? g / 2 : T(0);
    case B::minimum:
      if (which == 0) return u < v ? g : u == v ? g / 2 : T(0);
      return v < u ? g : u == v ? g / 2 : T(0);
    default: return T(0);
  }
}

template <class T>
__global__ void binary_kernel(B op, const T* a, StridedIndex ia, const T* b, StridedIndex ib, T* out, StridedIndex io,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[io.offset(i)] = binary_f(op, a[ia.offset(i)], b[ib.offset(i)]);
}

template <class T>
__global__ void binary_backward_kernel(B op, int which, const T* a, StridedIndex ia, const T* b, StridedIndex ib,
                                       const T* g, StridedIndex ig, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = binary_d(op, which, a[ia.offset(i)], b[ib.offset(i)], g[ig.offset(i)]);
}

// ---------------------------------------------------------------- bias + activation (bias_act in core/ops.h)
// T: h's element type, B: the bias's, W: the arithmetic's (float; double for f64). Act: unary_ops::Gelu,
// GeluTanh, or Identity for "none"; its value and its slope (d with g = 1), as the CPU's bias_act.
struct Identity {
  template <class M, class W> __device__ static W f(W z, double, double) { return z; }
  template <class M, class W> __device__ static W d(W, W, W, double, double) { return W(1); }
};
template <class Act, class W> __device__ W act_value(W z) { return Act::template f<DeviceMath>(z, 0, 0); }
template <class Act, class W> __device__ W act_slope(W z) { return Act::template d<DeviceMath>(z, z, W(1), 0, 0); }

// Y: the output's (and its gradient's) element type: T, or B with a residual res (y = res + act(h + bias)).
template <class Act, class T, class B, class W, class Y>
__global__ void bias_act_kernel(const T* h, const B* bias, const B* res, Y* y, int64_t n, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    W v = act_value<Act, W>(W(widen(h[i])) + W(widen(bias[i % N])));
    y[i] = narrow<Y>(res ? W(res[i]) + v : v);
  }
}

// dh = g·act'(h + bias), and the bias gradient's partial sums: block (x, y) takes 32 columns and a chunk of
// kBiasRows rows; its 32 × 8 threads walk the chunk's rows (a warp reads 32 consecutive columns of a row) and
// sum their column in a fixed order, then the 8 partials of a column are added in order into partial[y][col].
constexpr int kBiasRows = 256;
template <class Act, class T, class B, class W, class Y>
__global__ void bias_act_backward_kernel(const T* h, const B* bias, const Y* g, T* dh, W* partial, int64_t rows,
                                         int64_t N) {
  __shared__ W sums[8][33];
  int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  int64_t r0 = int64_t(blockIdx.y) * kBiasRows, r1 = min(rows, r0 + kBiasRows);
  W acc = 0;
  if (col < N) {
    W b = W(widen(bias[col]));
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      int64_t i = r * N + col;
      W dz = W(widen(g[i])) * act_slope<Act, W>(W(widen(h[i])) + b);
      dh[i] = narrow<T>(dz);
      acc += dz;
    }
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    W s = 0;
    for (int k = 0; k < 8; ++k) s += sums[k][threadIdx.x];
    partial[int64_t(blockIdx.y) * N + col] = s;
  }
}

// dbias[col] = Σ over the row chunks of partial[chunk][col], in chunk order.
template <class B, class W>
__global__ void bias_sum_kernel(const W* partial, B* dbias, int64_t chunks, int64_t N) {
  for (int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; col < N; col += int64_t(gridDim.x) * blockDim.x) {
    W s = 0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * N + col];
    dbias[col] = narrow<B>(s);
  }
}

// f(Act()) for the activation's name.
template <class F>
void with_act(const char* act, Device d, F&& f) {
  if (std::strcmp(act, "none") == 0) return f(Identity());
  if (std::strcmp(act, "gelu") == 0) return f(unary_ops::Gelu());
  if (std::strcmp(act, "gelu_tanh") == 0) return f(unary_ops::GeluTanh());
  no_device_kernel(act, d);
}

// f(T, B, W, Y) for h's dtype: f64 / f64 / double, f32 / f32 / float, bf16 | f16 / f32 / float; Y = B when
// wide_out (a residual), else T.
template <class F>
void with_bias_act_types(DType h, bool wide_out, F&& f) {
  auto go = [&](auto t, auto b) {
    if (wide_out) f(t, b, b, b);
    else f(t, b, b, t);
  };
  switch (h) {
    case DType::f64: return go(double(), double());
    case DType::f32: return go(float(), float());
    case DType::bf16: return go(__nv_bfloat16(), float());
    case DType::f16: return go(__half(), float());
    default: LD_FAIL("bias_act on CUDA: expected a floating dtype, got ", dtype_name(h));
  }
}

// ---------------------------------------------------------------- copies and fills

template <class D, class S>
__global__ void copy_kernel(D* dst, StridedIndex id, const S* src, StridedIndex is, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[id.offset(i)] = narrow<D>(widen(src[is.offset(i)]));
}

template <class T>
__global__ void where_kernel(const T* c, StridedIndex ic, const T* a, StridedIndex ia, const T* b, StridedIndex ib,
                             T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = c[ic.offset(i)] != T(0) ? a[ia.offset(i)] : b[ib.offset(i)];
}

// A fill value in a half format, rounded on the host by core/half.h.
template <class T> T host_value(double v) { return T(v); }
template <> __nv_bfloat16 host_value<__nv_bfloat16>(double v) {
  __nv_bfloat16_raw r;
  r.x = bfloat16(v).bits;
  return __nv_bfloat16(r);
}
template <> __half host_value<__half>(double v) {
  __half_raw r;
  r.x = float16(v).bits;
  return __half(r);
}

template <class T>
__global__ void fill_kernel(T* dst, StridedIndex id, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[id.offset(i)] = v;
}

#define LD_CUDA_ANY(DT, OPNAME, ...)                                                                \
  [&] {                                                                                             \
    switch (DT) {                                                                                   \
      case DType::f32: { using scalar_t = float; return __VA_ARGS__(); }                             \
      case DType::f64: { using scalar_t = double; return __VA_ARGS__(); }                            \
      case DType::i64: { using scalar_t = int64_t; return __VA_ARGS__(); }                           \
      case DType::bf16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }                    \
      case DType::f16: { using scalar_t = __half; return __VA_ARGS__(); }                            \
      default: LD_FAIL(OPNAME, " on CUDA: unsupported dtype ", dtype_name(DT));                      \
    }                                                                                               \
  }()

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  LD_CHECK(a.device() == b.device(), op, ": device mismatch: ", a.device().str(), " vs ", b.device().str());
}

// A contiguous operand of the output's shape reads as one flat run.
StridedIndex operand_index(const Tensor& t, const Shape& shape, const char* op) {
  if (t.shape() == shape && t.is_contiguous()) return strided_index({shape_numel(shape)}, {1}, op);
  return strided_index(shape, broadcast_strides(t, shape), op);
}

}  // namespace

void bias_act(const Tensor& h, const Tensor& bias, const char* act, const Tensor& residual, const Tensor& y) {
  int64_t n = h.numel(), N = h.size(-1);
  if (n == 0) return;
  with_act(act, h.device(), [&](auto a) {
    using Act = decltype(a);
    with_bias_act_types(h.dtype(), residual.defined(), [&](auto t, auto b, auto w, auto yt) {
      using T = decltype(t);
      using B = decltype(b);
      using W = decltype(w);
      using Y = decltype(yt);
      const B* res = residual.defined() ? static_cast<const B*>(residual.device_data()) : nullptr;
      bias_act_kernel<Act, T, B, W, Y><<<blocks_for(n), kThreads, 0, stream_of(y)>>>(
          static_cast<const T*>(h.device_data()), static_cast<const B*>(bias.device_data()), res,
          static_cast<Y*>(y.device_data()), n, N);
    });
  });
  LD_CUDA_LAUNCHED("bias_act");
}

void bias_act_backward(const Tensor& h, const Tensor& bias, const Tensor& g, const char* act, const Tensor& dh,
                       const Tensor& dbias) {
  int64_t N = h.size(-1), rows = N ? h.numel() / N : 0;
  if (N == 0) return;
  int64_t chunks = std::max<int64_t>(1, (rows + kBiasRows - 1) / kBiasRows);
  LD_CHECK(chunks <= 65535, "bias_act on CUDA: ", rows, " rows exceed the grid (", 65535 * int64_t(kBiasRows), ")");
  with_act(act, h.device(), [&](auto a) {
    using Act = decltype(a);
    with_bias_act_types(h.dtype(), g.dtype() != h.dtype(), [&](auto t, auto b, auto w, auto yt) {
      using T = decltype(t);
      using B = decltype(b);
      using W = decltype(w);
      using Y = decltype(yt);
      Tensor partial = empty({chunks, N}, {bias.dtype() == DType::f64 ? DType::f64 : DType::f32, h.device()});
      dim3 grid(unsigned((N + 31) / 32), unsigned(chunks)), block(32, 8);
      bias_act_backward_kernel<Act, T, B, W, Y><<<grid, block, 0, stream_of(dh)>>>(
          static_cast<const T*>(h.device_data()), static_cast<const B*>(bias.device_data()),
          static_cast<const Y*>(g.device_data()), static_cast<T*>(dh.device_data()),
          static_cast<W*>(partial.device_data()), rows, N);
      bias_sum_kernel<B, W><<<blocks_for(N), kThreads, 0, stream_of(dh)>>>(
          static_cast<const W*>(partial.device_data()), static_cast<B*>(dbias.device_data()), chunks, N);
    });
  });
  LD_CUDA_LAUNCHED("bias_act backward");
}

void unary(const Elementwise& e, const Tensor& x, const Tensor& y) { unary_kernels(e.name, x.device()).forward(e, x, y); }

void unary_backward(const Elementwise& e, const Tensor& x, const Tensor& y, const Tensor& g, const Tensor& dx) {
  unary_kernels(e.name, x.device()).backward(e, x, y, g, dx);
}

void binary(const char* name, const Tensor& a, const Tensor& b, const Tensor& out) {
  check_same_device(name, a, b);
  B op = binary_code(name, a.device());
  int64_t n = out.numel();
  if (n == 0) return;
  // out may be a strided view (Tensor::add_ into a slice), even a itself: each element is read, then written,
  // by the same thread.
  StridedIndex ia = operand_index(a, out.shape(), name), ib = operand_index(b, out.shape(), name),
               io = operand_index(out, out.shape(), name);
  LD_CUDA_FLOAT(a.dtype(), name, [&] {
    binary_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
        op, static_cast<const scalar_t*>(a.device_data()), ia, static_cast<const scalar_t*>(b.device_data()), ib,
        static_cast<scalar_t*>(out.device_data()), io, n);
  });
  LD_CUDA_LAUNCHED(name);
}

void binary_backward(const char* name, int which, const Tensor& a, const Tensor& b, const Tensor& g,
                     const Tensor& out) {
  B op = binary_code(name, a.device());
  int64_t n = out.numel();
  if (n == 0) return;
  StridedIndex ia = operand_index(a, out.shape(), name), ib = operand_index(b, out.shape(), name),
               ig = operand_index(g, out.shape(), name);
  LD_CUDA_FLOAT(a.dtype(), name, [&] {
    binary_backward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
        op, which, static_cast<const scalar_t*>(a.device_data()), ia, static_cast<const scalar_t*>(b.device_data()),
        ib, static_cast<const scalar_t*>(g.device_data()), ig, static_cast<scalar_t*>(out.device_data()), n);
  });
  LD_CUDA_LAUNCHED(name);
}

void copy_strided(const Tensor& dst, const Tensor& src, const Shape& src_strides) {
  int64_t n = dst.numel();
  if (n == 0) return;
  StridedIndex id = strided_index(dst.shape(), dst.strides(), "copy");
  StridedIndex is = strided_index(dst.shape(), src_strides, "copy");
  LD_CUDA_ANY(dst.dtype(), "copy", [&] {
    using D = scalar_t;
    LD_CUDA_ANY(src.dtype(), "copy", [&] {
      copy_kernel<D, scalar_t><<<blocks_for(n), kThreads, 0, stream_of(dst)>>>(
          static_cast<D*>(dst.device_data()), id, static_cast<const scalar_t*>(src.device_data()), is, n);
    });
  });
  LD_CUDA_LAUNCHED("copy");
}

void fill(const Tensor& dst, double value) {
  int64_t n = dst.numel();
  if (n == 0) return;
  StridedIndex id = strided_index(dst.shape(), dst.strides(), "fill_");
  LD_CUDA_ANY(dst.dtype(), "fill_", [&] {
    fill_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream_of(dst)>>>(static_cast<scalar_t*>(dst.device_data()),
                                                                           id, n, host_value<scalar_t>(value));
  });
  LD_CUDA_LAUNCHED("fill_");
}

void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  check_same_device("where", cond, a);
  check_same_device("where", a, b);
  int64_t n = out.numel();
  if (n == 0) return;
  StridedIndex ic = operand_index(cond, out.shape(), "where"), ia = operand_index(a, out.shape(), "where"),
               ib = operand_index(b, out.shape(), "where");
  LD_CUDA_FLOAT(a.dtype(), "where", [&] {
    where_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream_of(out)>>>(
        static_cast<const scalar_t*>(cond.device_data()), ic, static_cast<const scalar_t*>(a.device_data()), ia,
        static_cast<const scalar_t*>(b.device_data()), ib, static_cast<scalar_t*>(out.device_data()), n);
  });
  LD_CUDA_LAUNCHED("where");
}

namespace {

// y ← a·y + b·x over a TensorList (core/cuda/common.cuh): EMA updates, gradient unscaling and clipping of a whole
// model in a few launches.
constexpr int64_t kAxpbyChunk = int64_t(kThreads) * 16;

template <class T>
struct AxpbyItem {
  T* y;
  const T* x;  // null: y ← a·y
  int64_t n;
};

template <class T>
__global__ void axpby_kernel(TensorList<AxpbyItem<T>> l, T a, T b) {
  int k = list_entry(l, blockIdx.x);
  const AxpbyItem<T>& it = l.item[k];
  int64_t begin = (blockIdx.x - l.block_start[k]) * kAxpbyChunk;
  int64_t end = begin + kAxpbyChunk < it.n ? begin + kAxpbyChunk : it.n;
  if (it.x)
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) it.y[i] = a * it.y[i] + b * it.x[i];
  else
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) it.y[i] = a * it.y[i];
}

}  // namespace

void foreach_axpby(const std::vector<Tensor>& ys, const std::vector<Tensor>& xs, double a, double b) {
  if (ys.empty()) return;
  LD_CHECK(xs.empty() || xs.size() == ys.size(), "foreach_axpby on CUDA: ", ys.size(), " outputs and ", xs.size(), " inputs");
  const Tensor& y0 = ys[0];
  for (size_t i = 0; i < ys.size(); ++i)
    for (const Tensor* t : {&ys[i], xs.empty() ? &ys[i] : &xs[i]})
      LD_CHECK(t->device() == y0.device() && t->dtype() == y0.dtype() && t->is_contiguous() &&
                   t->numel() == ys[i].numel(),
               "foreach_axpby on CUDA: tensor ", i, " is ", dtype_name(t->dtype()), " ", shape_str(t->shape()), " on ",
               t->device().str(), ", expected contiguous ", dtype_name(y0.dtype()), " ", shape_str(ys[i].shape()),
               " on ", y0.device().str());
  LD_CUDA_FLOAT(y0.dtype(), "foreach_axpby", [&] {
    using T = scalar_t;
    struct Src {
      const Tensor *y, *x;
    };
    std::vector<Src> srcs;
    for (size_t i = 0; i < ys.size(); ++i) srcs.push_back({&ys[i], xs.empty() ? nullptr : &xs[i]});
    auto make = [](const Src& s, AxpbyItem<T>& it) -> int64_t {
      it = {static_cast<T*>(s.y->device_data()), s.x ? static_cast<const T*>(s.x->device_data()) : nullptr, s.y->numel()};
      return (it.n + kAxpbyChunk - 1) / kAxpbyChunk;
    };
    cudaStream_t stream = stream_of(y0);
    auto launch = [&](const TensorList<AxpbyItem<T>>& l, int blocks) {
      axpby_kernel<T><<<blocks, kThreads, 0, stream>>>(l, T(a), T(b));
      LD_CUDA_LAUNCHED("foreach_axpby");
    };
    for_lists<AxpbyItem<T>>(srcs, make, launch);
  });
}

LD_KERNEL_FILE(core_elementwise);
LD_REGISTER_KERNEL(kernels::unary, CUDA, unary);
LD_REGISTER_KERNEL(kernels::unary_backward, CUDA, unary_backward);
LD_REGISTER_KERNEL(kernels::binary, CUDA, binary);
LD_REGISTER_KERNEL(kernels::binary_backward, CUDA, binary_backward);
LD_REGISTER_KERNEL(kernels::where, CUDA, where);
LD_REGISTER_KERNEL(kernels::foreach_axpby, CUDA, foreach_axpby);
LD_REGISTER_KERNEL(kernels::bias_act, CUDA, bias_act);
LD_REGISTER_KERNEL(kernels::bias_act_backward, CUDA, bias_act_backward);

}  // namespace liandan::cuda_impl
