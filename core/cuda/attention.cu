// Fused softmax attention on CUDA, flash-attention style (Dao et al. 2022; the backward as in FlashAttention-2):
// no Tq × Tk matrix is ever stored. Forward: a block of R query rows (one thread each) walks the keys in tiles
// of R staged in shared memory, keeping the running max m, the running sum l and the output accumulator
// (online softmax); it writes the output and lse = m + log l per row (+inf for a row that sees no key, whose
// output is 0: the CPU kernel's rule). Backward, with Di = Σ dO·O per query row:
//   p = exp(scale·q·k − lse),  dv_j += p·dO_i,  ds = p·(dO_i·v_j − Di),  dk_j += scale·ds·q_i,  dq_i += scale·ds·k_j
// computed twice without atomics: one kernel owns key rows (dk, dv), the other query rows (dq), so results
// are deterministic. Masks: causal (key j visible from query i iff j ≤ Tk − Tq + i, the KV-cache offset) and
// key_valid [B, Tk]. Operands are addressed by rows (HeadRows, core/device.h): q, k, v, dO may be strided views
// of [B, H, T, D] (the heads of a fused QKV projection), O, dQ, dK, dV are written as [B, T, H, D] rows, so no
// head split or merge copies a tensor. Head dims up to 128 (rows padded to the next of 16/32/64/128; larger ones take the
// composite). The arithmetic is plain f32/f64 FMA, not tensor cores: fast in memory, not yet in FLOPs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstring>
#include <type_traits>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/cuda/mma.cuh"

namespace liandan::cuda_impl {
namespace {

namespace wmma = nvcuda::wmma;

template <class T> __device__ T dev_exp(T x) {
  if constexpr (sizeof(T) == 4) return expf(x);
  else return exp(x);
}
template <class T> __device__ T dev_log(T x) {
  if constexpr (sizeof(T) == 4) return logf(x);
  else return log(x);
}
template <class T> __device__ T pos_inf() { return T(INFINITY); }

// The row layouts of a call's operands (HeadRows): inputs q, k, v, dO; outputs O, dQ, dK, dV.
struct Rows {
  HeadRows q, k, v, o, g, dq, dk, dv;
};

template <class T>
__device__ bool visible(const AttentionShape& a, int64_t i, int64_t j, const T* valid_row) {
  if (a.causal && j > a.Tk - a.Tq + i) return false;
  return !valid_row || valid_row[j] != T(0);
}

// Stages `rows` rows of `width` elements, `ld` apart (row `first` on, zero past `total` rows or `width`) into a
// [rows][kD + 1] shared tile; the +1 keeps a thread reading its own row free of bank conflicts.
template <class T, int kD>
__device__ void load_rows(T* dst, const T* src, int64_t ld, int64_t first, int64_t total, int64_t width, int rows) {
  for (int t = threadIdx.x; t < rows * kD; t += blockDim.x) {
    int r = t / kD, c = t % kD;
    int64_t row = first + r;
    dst[r * (kD + 1) + c] = (row < total && c < width) ? src[row * ld + c] : T(0);
  }
}

// The next tile of two row sets (keys and values, or queries and output gradients), between barriers: the
// first lets every thread finish with the previous tile, the second publishes this one.
template <class T, int kD>
__device__ void load_tile_pair(T* a_dst, const T* a_src, int64_t a_ld, T* b_dst, const T* b_src, int64_t b_ld,
                               int64_t first, int64_t total, int64_t a_width, int64_t b_width, int rows) {
  __syncthreads();
  load_rows<T, kD>(a_dst, a_src, a_ld, first, total, a_width, rows);
  load_rows<T, kD>(b_dst, b_src, b_ld, first, total, b_width, rows);
  __syncthreads();
}

// The last key any query of this block can see, plus one.
__device__ int64_t key_end(const AttentionShape& a, int R) {
  int64_t last_row = min(a.Tq - 1, int64_t(blockIdx.x) * R + R - 1);
  return a.causal ? min(a.Tk, a.Tk - a.Tq + last_row + 1) : a.Tk;
}

template <class T, int kD>
__global__ void attention_forward_kernel(const T* q, const T* k, const T* v, const T* valid, T* out, T* lse,
                                         AttentionShape a, Rows L) {
  extern __shared__ unsigned char smem[];
  const int R = blockDim.x;
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + R * (kD + 1);
  int64_t bh = blockIdx.y;
  const T *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0);
  const T* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  int64_t i = int64_t(blockIdx.x) * R + threadIdx.x;
  bool active = i < a.Tq;
  T qr[kD], acc[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) {
    qr[d] = (active && d < a.D) ? qb[i * L.q.st + d] : T(0);
    acc[d] = 0;
  }
  T m = -pos_inf<T>(), l = 0;
  int64_t kend = key_end(a, R);
  for (int64_t j0 = 0; j0 < kend; j0 += R) {
    load_tile_pair<T, kD>(ks, kb, L.k.st, vs, vb, L.v.st, j0, a.Tk, a.D, a.Dv, R);
    if (!active) continue;
    int jn = int(min(int64_t(R), kend - j0));
    for (int jj = 0; jj < jn; ++jj) {
      if (!visible(a, i, j0 + jj, vrow)) continue;
      const T* kr = ks + jj * (kD + 1);
      T s = 0;
#pragma unroll
      for (int d = 0; d < kD; ++d) s += qr[d] * kr[d];
      s *= T(a.scale);
      T mn = s > m ? s : m;
      T corr = dev_exp(m - mn), p = dev_exp(s - mn);  // corr = 0 at the first visible key (m = −inf)
      l = l * corr + p;
      const T* vr = vs + jj * (kD + 1);
#pragma unroll
      for (int d = 0; d < kD; ++d) acc[d] = acc[d] * corr + p * vr[d];
      m = mn;
    }
  }
  if (!active) return;
  T* o = out + L.o.at(bh, i);
  T inv = l > 0 ? T(1) / l : T(0);
  // Register arrays are indexed with compile-time constants only (unrolled), or they move to local memory.
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < a.Dv) o[d] = acc[d] * inv;
  lse[bh * a.Tq + i] = l > 0 ? m + dev_log(l) : pos_inf<T>();
}

// Di = Σ_d dO[i, d]·O[i, d], one thread per query row (r = bh·Tq + i); T: dO's and O's elements, S: Di's.
template <class T, class S>
__global__ void attention_di_kernel(const T* g, const T* o, S* di, int64_t rows, int64_t Tq, int64_t Dv, Rows L) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const T *gr = g + L.g.at(r / Tq, r % Tq), *orow = o + L.o.at(r / Tq, r % Tq);
    S s = 0;
    for (int64_t d = 0; d < Dv; ++d) s += S(widen(gr[d])) * S(widen(orow[d]));
    di[r] = s;
  }
}

// dk, dv: a block owns R key rows (one thread each, rows staged in shared memory) and walks the query tiles.
template <class T, int kD>
__global__ void attention_dkv_kernel(const T* q, const T* k, const T* v, const T* valid, const T* lse, const T* di,
                                     const T* g, T* dk, T* dv, AttentionShape a, Rows L) {
  extern __shared__ unsigned char smem[];
  const int R = blockDim.x;
  T* kown = reinterpret_cast<T*>(smem);
  T* vown = kown + R * (kD + 1);
  T* qs = vown + R * (kD + 1);
  T* gs = qs + R * (kD + 1);
  T* ls = gs + R * (kD + 1);
  T* ds_ = ls + R;
  int64_t bh = blockIdx.y;
  const T *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const T* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  int64_t jfirst = int64_t(blockIdx.x) * R, j = jfirst + threadIdx.x;
  bool key_ok = j < a.Tk && (!vrow || vrow[j] != 0);
  load_rows<T, kD>(kown, kb, L.k.st, jfirst, a.Tk, a.D, R);
  load_rows<T, kD>(vown, vb, L.v.st, jfirst, a.Tk, a.Dv, R);
  T dka[kD], dva[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) dka[d] = dva[d] = 0;
  const T* kr = kown + threadIdx.x * (kD + 1);
  const T* vr = vown + threadIdx.x * (kD + 1);
  // Causal: queries before jfirst − (Tk − Tq) see none of this block's keys.
  int64_t istart = a.causal ? max(int64_t(0), jfirst - (a.Tk - a.Tq)) : 0;
  for (int64_t i0 = istart; i0 < a.Tq; i0 += R) {
    __syncthreads();
    load_rows<T, kD>(qs, qb, L.q.st, i0, a.Tq, a.D, R);
    load_rows<T, kD>(gs, gb, L.g.st, i0, a.Tq, a.Dv, R);
    int64_t it = i0 + threadIdx.x;
    ls[threadIdx.x] = it < a.Tq ? lse[bh * a.Tq + it] : pos_inf<T>();
    ds_[threadIdx.x] = it < a.Tq ? di[bh * a.Tq + it] : T(0);
    __syncthreads();
    if (!key_ok) continue;
    int in = int(min(int64_t(R), a.Tq - i0));
    for (int ii = 0; ii < in; ++ii) {
      if (a.causal && j > a.Tk - a.Tq + i0 + ii) continue;
      T lse_i = ls[ii];
      if (lse_i == pos_inf<T>()) continue;  // a row that sees nothing has p = 0
      const T *qr = qs + ii * (kD + 1), *gr = gs + ii * (kD + 1);
      T s = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        s += qr[d] * kr[d];
        dp += gr[d] * vr[d];
      }
      T p = dev_exp(s * T(a.scale) - lse_i), dsv = p * (dp - ds_[ii]);
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        dva[d] += p * gr[d];
        dka[d] += dsv * qr[d];
      }
    }
  }
  if (j >= a.Tk) return;
#pragma unroll
  for (int d = 0; d < kD; ++d) {
    if (d < a.D) dk[L.dk.at(bh, j) + d] = dka[d] * T(a.scale);
    if (d < a.Dv) dv[L.dv.at(bh, j) + d] = dva[d];
  }
}

// dq: a block owns R query rows (staged in shared memory) and walks the key tiles.
template <class T, int kD>
__global__ void attention_dq_kernel(const T* q, const T* k, const T* v, const T* valid, const T* lse, const T* di,
                                    const T* g, T* dq, AttentionShape a, Rows L) {
  extern __shared__ unsigned char smem[];
  const int R = blockDim.x;
  T* qown = reinterpret_cast<T*>(smem);
  T* gown = qown + R * (kD + 1);
  T* ks = gown + R * (kD + 1);
  T* vs = ks + R * (kD + 1);
  int64_t bh = blockIdx.y;
  const T *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const T* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  int64_t ifirst = int64_t(blockIdx.x) * R, i = ifirst + threadIdx.x;
  bool active = i < a.Tq;
  load_rows<T, kD>(qown, qb, L.q.st, ifirst, a.Tq, a.D, R);
  load_rows<T, kD>(gown, gb, L.g.st, ifirst, a.Tq, a.Dv, R);
  T Lse = active ? lse[bh * a.Tq + i] : pos_inf<T>(), Di = active ? di[bh * a.Tq + i] : T(0);
  T dqa[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) dqa[d] = 0;
  const T* qr = qown + threadIdx.x * (kD + 1);
  const T* gr = gown + threadIdx.x * (kD + 1);
  int64_t kend = key_end(a, R);
  for (int64_t j0 = 0; j0 < kend; j0 += R) {
    load_tile_pair<T, kD>(ks, kb, L.k.st, vs, vb, L.v.st, j0, a.Tk, a.D, a.Dv, R);
    if (!active || Lse == pos_inf<T>()) continue;
    int jn = int(min(int64_t(R), kend - j0));
    for (int jj = 0; jj < jn; ++jj) {
      if (!visible(a, i, j0 + jj, vrow)) continue;
      const T *kr = ks + jj * (kD + 1), *vr = vs + jj * (kD + 1);
      T s = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        s += qr[d] * kr[d];
        dp += gr[d] * vr[d];
      }
      T dsv = dev_exp(s * T(a.scale) - Lse) * (dp - Di);
#pragma unroll
      for (int d = 0; d < kD; ++d) dqa[d] += dsv * kr[d];
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < a.D) dq[L.dq.at(bh, i) + d] = dqa[d] * T(a.scale);
}

// Rows per tile (= threads per block): 64, or 32 for f64 so that the largest tiles fit in shared memory.
template <class T> int tile_rows() { return sizeof(T) == 4 ? 64 : 32; }

template <class Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    LD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// The backward kernels' inputs as pointers, and Di = Σ dO·O per query row (computed here, on the stream).
// T: the operands' element type; S: the row statistics' (lse, Di) and the key mask's (float for half operands).
template <class T, class S = T>
struct BackwardArgs {
  const T *q, *k, *v, *g;
  const S *valid, *lse;
  Tensor di_buffer;
  S* di;
  Rows L;
  cudaStream_t stream;
  BackwardArgs(const AttentionShape& a, const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& valid_,
               const Tensor& out, const Tensor& lse_, const Tensor& g_, const Tensor& dq, const Tensor& dk,
               const Tensor& dv)
      : q(ptr<T>(q_)), k(ptr<T>(k_)), v(ptr<T>(v_)), g(ptr<T>(g_)),
        valid(valid_.defined() ? ptr<S>(valid_) : nullptr), lse(ptr<S>(lse_)),
        di_buffer(empty({std::max<int64_t>(a.BH * a.Tq, 1)}, {lse_.dtype(), q_.device()})),
        di(static_cast<S*>(di_buffer.device_data())),
        L{head_rows(q_), head_rows(k_), head_rows(v_), head_rows(out), head_rows(g_), head_rows(dq), head_rows(dk),
          head_rows(dv)},
        stream(stream_of(g_)) {
    attention_di_kernel<T, S><<<blocks_for(a.BH * a.Tq), kThreads, 0, stream>>>(g, ptr<T>(out), di, a.BH * a.Tq, a.Tq,
                                                                                a.Dv, L);
  }
  template <class E> static const E* ptr(const Tensor& t) { return static_cast<const E*>(t.device_data()); }
};

// The forward kernels' arguments as pointers (T, S as for BackwardArgs).
template <class T, class S = T>
struct ForwardArgs {
  const T *q, *k, *v;
  const S* valid;
  T* out;
  S* lse;
  Rows L;
  cudaStream_t stream;
  ForwardArgs(const Tensor& q_, const Tensor& k_, const Tensor& v_, const Tensor& valid_, const Tensor& out_,
              const Tensor& lse_)
      : q(ptr<T>(q_)), k(ptr<T>(k_)), v(ptr<T>(v_)), valid(valid_.defined() ? ptr<S>(valid_) : nullptr),
        out(static_cast<T*>(out_.device_data())), lse(static_cast<S*>(lse_.device_data())),
        L{head_rows(q_), head_rows(k_), head_rows(v_), head_rows(out_)}, stream(stream_of(out_)) {}
  template <class E> static const E* ptr(const Tensor& t) { return static_cast<const E*>(t.device_data()); }
};

template <class T, int kD>
void forward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                    const Tensor& out, const Tensor& lse) {
  int R = tile_rows<T>();
  ForwardArgs<T> p(q, k, v, valid, out, lse);
  size_t smem = size_t(2 * R * (kD + 1)) * sizeof(T);
  allow_shared(attention_forward_kernel<T, kD>, smem);
  dim3 grid(unsigned((a.Tq + R - 1) / R), unsigned(a.BH));
  attention_forward_kernel<T, kD><<<grid, R, smem, p.stream>>>(p.q, p.k, p.v, p.valid, p.out, p.lse, a, p.L);
}

template <class T, int kD>
void backward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                     const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv) {
  int R = tile_rows<T>();
  BackwardArgs<T> p(a, q, k, v, valid, out, lse, g, dq, dk, dv);
  size_t smem_kv = size_t(4 * R * (kD + 1) + 2 * R) * sizeof(T);
  allow_shared(attention_dkv_kernel<T, kD>, smem_kv);
  attention_dkv_kernel<T, kD><<<dim3(unsigned((a.Tk + R - 1) / R), unsigned(a.BH)), R, smem_kv, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<T*>(dk.device_data()), static_cast<T*>(dv.device_data()), a,
      p.L);
  size_t smem_q = size_t(4 * R * (kD + 1)) * sizeof(T);
  allow_shared(attention_dq_kernel<T, kD>, smem_q);
  attention_dq_kernel<T, kD><<<dim3(unsigned((a.Tq + R - 1) / R), unsigned(a.BH)), R, smem_q, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<T*>(dq.device_data()), a, p.L);
}


// ---------------------------------------------------------------- tensor cores (bf16 / f16 autocast)
// The same algorithm with the four GEMMs of a tile on tensor cores (WMMA 16×16×16, bf16 or f16 operands H, f32
// accumulation), the autocast numbers of the composite (scores, probabilities and gradients rounded to H as
// GEMM operands; softmax, running max/sum and outputs in f32). A block of 4 warps owns 64 rows (queries, or keys
// in the dK/dV kernel); each warp computes the 16 rows it owns of every product. Elementwise steps (masking,
// exponentials, rescaling) run on shared-memory tiles, since a fragment's element layout is not specified: each
// warp on its own 16 rows, a row's columns over the lanes (conflict-free), row maxima and sums as warp butterflies. Head dims are padded with zeros to the next of 16/32/64/128.
namespace tc {
constexpr int kRows = 64, kWarps = 4, kBlock = kWarps * 32;
static_assert(kWarps * 16 == kRows, "each warp owns the 16 rows of its WMMA tiles");
// The half format of the operands: bf16 or f16 (autocast's), rounded to nearest even.
template <class H> __device__ H to_half(float x);
template <> __device__ __nv_bfloat16 to_half<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __half to_half<__half>(float x) { return __float2half_rn(x); }
template <class H> using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major>;
template <class H> using FragAt = wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::col_major>;  // a transposed operand
template <class H> using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::row_major>;
template <class H> using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Carves the block's dynamic shared memory into 32-byte-aligned arrays (WMMA's pointer alignment).
struct Carve {
  unsigned char* p;
  template <class T> __device__ T* take(int64_t n) {
    T* out = reinterpret_cast<T*>(p);
    p += (n * int64_t(sizeof(T)) + 31) / 32 * 32;
    return out;
  }
};
template <int kD> constexpr size_t shared_bytes(int half_tiles, int f32_tiles, int square_f32, int square_half) {
  auto up = [](size_t b) { return (b + 31) / 32 * 32; };
  return half_tiles * up(size_t(kRows) * kD * 2) + f32_tiles * up(size_t(kRows) * kD * 4) +
         square_f32 * up(size_t(kRows) * kRows * 4) + square_half * up(size_t(kRows) * kRows * 2) + 3 * up(kRows * 4);
}

// rows × kD H tile from rows of `width` (f32, or already H), `ld` apart (row `first` on; zero past `total` or
// `width`).
// Rows of full width (width = kD) whose elements start 16-byte aligned and stay so row to row go 8 elements at a
// time: one 16-byte load of half rows (two of f32 rows) and one 16-byte shared store per thread and step, instead of
// 8 scalar ones — the staging of the K/V tiles otherwise issues as many load/store instructions as the MMAs need.
template <class H, int kD, int kTileRows, int kLd, class In>
__device__ bool stage_vectorized(H* dst, const In* src, int64_t ld, int64_t first, int64_t total, int64_t width) {
  constexpr int kV = 8, kPerRow = kD / kV;
  if (kD % kV != 0 || width != kD || ld % kV != 0 || reinterpret_cast<uintptr_t>(src) % (kV * sizeof(In)) != 0)
    return false;
  for (int t = threadIdx.x; t < kTileRows * kPerRow; t += blockDim.x) {
    int r = t / kPerRow, c = (t % kPerRow) * kV;
    int64_t row = first + r;
    uint4 packed = {0u, 0u, 0u, 0u};  // zeros past the last row (both half formats' 0 is all-zero bits)
    if (row < total) {
      const In* s = src + row * ld + c;
      if constexpr (std::is_same_v<In, H>) {
        packed = *reinterpret_cast<const uint4*>(s);
      } else {
        float4 lo = reinterpret_cast<const float4*>(s)[0], hi = reinterpret_cast<const float4*>(s)[1];
        H h[kV] = {to_half<H>(float(lo.x)), to_half<H>(float(lo.y)), to_half<H>(float(lo.z)), to_half<H>(float(lo.w)),
                   to_half<H>(float(hi.x)), to_half<H>(float(hi.y)), to_half<H>(float(hi.z)), to_half<H>(float(hi.w))};
        memcpy(&packed, h, sizeof(packed));
      }
    }
    *reinterpret_cast<uint4*>(dst + r * kLd + c) = packed;
  }
  return true;
}

// kTileRows rows of kD elements into a shared tile whose rows are kLd elements apart (kLd = kD for the WMMA tiles;
// ldmatrix's tiles are padded, see the mma namespace below).
template <class H, int kD, int kTileRows = kRows, int kLd = kD, class In>
__device__ void stage(H* dst, const In* src, int64_t ld, int64_t first, int64_t total, int64_t width) {
  if constexpr (std::is_same_v<In, H> || std::is_same_v<In, float>)
    if (stage_vectorized<H, kD, kTileRows, kLd, In>(dst, src, ld, first, total, width)) return;
  for (int t = threadIdx.x; t < kTileRows * kD; t += blockDim.x) {
    int r = t / kD, c = t % kD;
    int64_t row = first + r;
    dst[r * kLd + c] = to_half<H>((row < total && c < width) ? float(widen(src[row * ld + c])) : 0.0f);
  }
}

// out[64 × 64] (f32, ld 64) = A[64 × kD] · B[64 × kD]ᵀ, warp w computing rows 16w..16w+15.
template <class H, int kD>
__device__ void gemm_abt(float* out, const H* A, const H* B) {
  int w = threadIdx.x / 32;
  for (int n = 0; n < kRows / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < kD; kk += 16) {
      FragA<H> a;
      FragBt<H> b;
      wmma::load_matrix_sync(a, A + 16 * w * kD + kk, kD);
      wmma::load_matrix_sync(b, B + 16 * n * kD + kk, kD);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(out + 16 * w * kRows + 16 * n, acc, kRows, wmma::mem_row_major);
  }
}

// acc[n] (rows 16w.. of a 64 × kD product) += X · Y, X = 64 × 64 H (or its transpose, XT), Y = 64 × kD H.
template <class H, int kD, bool XT>
__device__ void gemm_acc(FragC (&acc)[kD / 16], const H* X, const H* Y) {
  int w = threadIdx.x / 32;
  for (int kk = 0; kk < kRows; kk += 16) {
    FragA<H> a;
    FragAt<H> at;
    if (XT) wmma::load_matrix_sync(at, X + kk * kRows + 16 * w, kRows);  // element (r, c) = X[c][r]
    else wmma::load_matrix_sync(a, X + 16 * w * kRows + kk, kRows);
#pragma unroll
    for (int n = 0; n < kD / 16; ++n) {
      FragB<H> b;
      wmma::load_matrix_sync(b, Y + kk * kD + 16 * n, kD);
      if (XT) wmma::mma_sync(acc[n], at, b, acc[n]);
      else wmma::mma_sync(acc[n], a, b, acc[n]);
    }
  }
}

// Writes a warp's accumulators (rows 16w.., × scale) through the f32 staging tile to global rows of `width`,
// `ld` apart.
template <int kD, class Out>
__device__ void write_rows(float* stage_f32, FragC (&acc)[kD / 16], Out* dst, int64_t ld, int64_t first,
                           int64_t total, int64_t width, float scale) {
  int w = threadIdx.x / 32;
#pragma unroll
  for (int n = 0; n < kD / 16; ++n)
    wmma::store_matrix_sync(stage_f32 + 16 * w * kD + 16 * n, acc[n], kD, wmma::mem_row_major);
  __syncthreads();
  for (int t = threadIdx.x; t < kRows * kD; t += blockDim.x) {
    int r = t / kD, c = t % kD;
    if (first + r < total && c < width) dst[(first + r) * ld + c] = narrow<Out>(stage_f32[t] * scale);
  }
}

// P = exp(scale·S − lse) (masked: 0) into Pb (H, when given), then dS = P ∘ (dP − Di) into dSb; row r of the
// 64 × 64 tile is query i0 + r against keys j0... Warp w takes its 16 rows, the lanes a row's columns.
template <class H>
__device__ void probabilities_and_ds(const AttentionShape& a, const float* vrow, int64_t i0, int64_t j0, const float* S,
                                     const float* dP, const float* L, const float* Di, H* Pb, H* dSb) {
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
  for (int r = 16 * w; r < 16 * w + 16; ++r) {
    int64_t i = i0 + r;
    for (int jj = lane; jj < kRows; jj += 32) {
      int64_t j = j0 + jj;
      bool vis = i < a.Tq && j < a.Tk && L[r] != INFINITY && visible(a, i, j, vrow);
      float p = vis ? expf(S[r * kRows + jj] * float(a.scale) - L[r]) : 0.0f;
      if (Pb) Pb[r * kRows + jj] = to_half<H>(p);
      dSb[r * kRows + jj] = to_half<H>(p * (dP[r * kRows + jj] - Di[r]));
    }
  }
}

// dK, dV for the block's 64 keys, walking the query tiles.
template <class H, int kD, class In>
__global__ void dkv_kernel(const In* q, const In* k, const In* v, const float* valid, const float* lse,
                           const float* di, const In* g, In* dk, In* dv, AttentionShape a, Rows L) {
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *Ks = cv.take<H>(kRows * kD), *Vs = cv.take<H>(kRows * kD), *Qs = cv.take<H>(kRows * kD),
       *Gs = cv.take<H>(kRows * kD);
  float* stage_f32 = cv.take<float>(kRows * kD);
  float *S = cv.take<float>(kRows * kRows), *dP = cv.take<float>(kRows * kRows);
  H *Pb = cv.take<H>(kRows * kRows), *dSb = cv.take<H>(kRows * kRows);
  float *Ls = cv.take<float>(kRows), *Di = cv.take<float>(kRows);
  int64_t bh = blockIdx.y, j0 = int64_t(blockIdx.x) * kRows;
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  stage<H, kD>(Ks, kb, L.k.st, j0, a.Tk, a.D);
  stage<H, kD>(Vs, vb, L.v.st, j0, a.Tk, a.Dv);
  FragC dk_acc[kD / 16], dv_acc[kD / 16];
#pragma unroll
  for (int n = 0; n < kD / 16; ++n) {
    wmma::fill_fragment(dk_acc[n], 0.0f);
    wmma::fill_fragment(dv_acc[n], 0.0f);
  }
  int64_t istart = a.causal ? max(int64_t(0), j0 - (a.Tk - a.Tq)) : 0;
  for (int64_t i0 = istart; i0 < a.Tq; i0 += kRows) {
    __syncthreads();
    stage<H, kD>(Qs, qb, L.q.st, i0, a.Tq, a.D);
    stage<H, kD>(Gs, gb, L.g.st, i0, a.Tq, a.Dv);
    if (threadIdx.x < kRows) {
      int64_t i = i0 + threadIdx.x;
      Ls[threadIdx.x] = i < a.Tq ? lse[bh * a.Tq + i] : INFINITY;
      Di[threadIdx.x] = i < a.Tq ? di[bh * a.Tq + i] : 0.0f;
    }
    __syncthreads();
    gemm_abt<H, kD>(S, Qs, Ks);   // scores, queries × keys
    gemm_abt<H, kD>(dP, Gs, Vs);  // dO · Vᵀ
    __syncthreads();
    probabilities_and_ds<H>(a, vrow, i0, j0, S, dP, Ls, Di, Pb, dSb);
    __syncthreads();
    gemm_acc<H, kD, true>(dv_acc, Pb, Gs);   // dV += Pᵀ dO (rows: the warp's keys)
    gemm_acc<H, kD, true>(dk_acc, dSb, Qs);  // dK += dSᵀ Q
  }
  __syncthreads();
  write_rows<kD>(stage_f32, dv_acc, dv + L.dv.at(bh, 0), L.dv.st, j0, a.Tk, a.Dv, 1.0f);
  __syncthreads();
  write_rows<kD>(stage_f32, dk_acc, dk + L.dk.at(bh, 0), L.dk.st, j0, a.Tk, a.D, float(a.scale));
}

// dQ for the block's 64 queries, walking the key tiles.
template <class H, int kD, class In>
__global__ void dq_kernel(const In* q, const In* k, const In* v, const float* valid, const float* lse,
                          const float* di, const In* g, In* dq, AttentionShape a, Rows L) {
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *Qs = cv.take<H>(kRows * kD), *Gs = cv.take<H>(kRows * kD), *Ks = cv.take<H>(kRows * kD),
       *Vs = cv.take<H>(kRows * kD);
  float* stage_f32 = cv.take<float>(kRows * kD);
  float *S = cv.take<float>(kRows * kRows), *dP = cv.take<float>(kRows * kRows);
  H* dSb = cv.take<H>(kRows * kRows);
  float *Ls = cv.take<float>(kRows), *Di = cv.take<float>(kRows);
  int64_t bh = blockIdx.y, i0 = int64_t(blockIdx.x) * kRows;
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  stage<H, kD>(Qs, qb, L.q.st, i0, a.Tq, a.D);
  stage<H, kD>(Gs, gb, L.g.st, i0, a.Tq, a.Dv);
  if (threadIdx.x < kRows) {
    int64_t i = i0 + threadIdx.x;
    Ls[threadIdx.x] = i < a.Tq ? lse[bh * a.Tq + i] : INFINITY;
    Di[threadIdx.x] = i < a.Tq ? di[bh * a.Tq + i] : 0.0f;
  }
  FragC dq_acc[kD / 16];
#pragma unroll
  for (int n = 0; n < kD / 16; ++n) wmma::fill_fragment(dq_acc[n], 0.0f);
  int64_t kend = a.causal ? min(a.Tk, a.Tk - a.Tq + min(a.Tq - 1, i0 + kRows - 1) + 1) : a.Tk;
  for (int64_t j0 = 0; j0 < kend; j0 += kRows) {
    __syncthreads();
    stage<H, kD>(Ks, kb, L.k.st, j0, a.Tk, a.D);
    stage<H, kD>(Vs, vb, L.v.st, j0, a.Tk, a.Dv);
    __syncthreads();
    // (a warp owns its 16 query rows of S, dP and dS: it meets only itself until the next K/V tile)
    gemm_abt<H, kD>(S, Qs, Ks);
    gemm_abt<H, kD>(dP, Gs, Vs);
    __syncwarp();
    probabilities_and_ds<H>(a, vrow, i0, j0, S, dP, Ls, Di, nullptr, dSb);
    __syncwarp();
    gemm_acc<H, kD, false>(dq_acc, dSb, Ks);  // dQ += dS K
  }
  __syncthreads();
  write_rows<kD>(stage_f32, dq_acc, dq + L.dq.at(bh, 0), L.dq.st, i0, a.Tq, a.D, float(a.scale));
}

template <class H, int kD, class In>
void backward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                     const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv) {
  BackwardArgs<In, float> p(a, q, k, v, valid, out, lse, g, dq, dk, dv);
  size_t smem_kv = shared_bytes<kD>(4, 1, 2, 2);
  allow_shared(dkv_kernel<H, kD, In>, smem_kv);
  dkv_kernel<H, kD, In><<<dim3(unsigned((a.Tk + kRows - 1) / kRows), unsigned(a.BH)), kBlock, smem_kv, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<In*>(dk.device_data()), static_cast<In*>(dv.device_data()),
      a, p.L);
  size_t smem_q = shared_bytes<kD>(4, 1, 2, 1);
  allow_shared(dq_kernel<H, kD, In>, smem_q);
  dq_kernel<H, kD, In><<<dim3(unsigned((a.Tq + kRows - 1) / kRows), unsigned(a.BH)), kBlock, smem_q, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<In*>(dq.device_data()), a, p.L);
}


// ---------------------------------------------------------------- forward on mma.sync (FlashAttention-2 style)
// The forward keeps everything a query row needs in registers (core/cuda/mma.cuh gives the fragment layouts): a
// warp owns 16·kM query rows; per key tile of kN keys it computes S = Q·Kᵀ into C fragments, applies the mask, the
// scale and the online softmax to them in place (a row's elements live in the 4 lanes of one group: max and sum
// are two xor-shuffles), rescales its O accumulators, and multiplies P — the same registers, rounded to H and
// repacked as A fragments — by V. Only K and V pass through shared memory (and Q once); the block meets twice per
// key tile, to stage them. Q, K, V tiles are padded to kD + 8 halves a row, so each 8-row phase of an ldmatrix
// reads 8 distinct 16-byte bank groups.
// Exponentials are base 2 with the scale folded in (exp(x) = 2^(x·log2 e)), as FlashAttention's.
namespace fa {
constexpr int kN = 64;                                            // keys per tile
template <int kD> __host__ __device__ constexpr int warp_m_tiles() { return kD <= 64 ? 2 : 1; }  // registers: O is 16·kM × kD per warp
template <int kD> __host__ __device__ constexpr int block_rows() { return kWarps * 16 * warp_m_tiles<kD>(); }
template <int kD> __host__ __device__ constexpr int padded() { return kD + 8; }
template <int kD> __host__ __device__ constexpr size_t shared_bytes() {
  return size_t(block_rows<kD>() + 2 * kN) * padded<kD>() * 2 + 64;  // + Carve's alignment
}

template <class H, int kD, class In>
__global__ void __launch_bounds__(kBlock) forward_kernel(const In* q, const In* k, const In* v, const float* valid,
                                                          In* out, float* lse, AttentionShape a, Rows L) {
  constexpr int kM = warp_m_tiles<kD>(), kLd = padded<kD>(), kBlockRows = block_rows<kD>();
  constexpr float kLog2e = 1.4426950408889634f;
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *Qs = cv.take<H>(kBlockRows * kLd), *Ks = cv.take<H>(kN * kLd), *Vs = cv.take<H>(kN * kLd);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.y, i0 = int64_t(blockIdx.x) * kBlockRows;
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  const float scale2 = float(a.scale) * kLog2e;
  stage<H, kD, kBlockRows, kLd>(Qs, qb, L.q.st, i0, a.Tq, a.D);

  // Warp w's rows: m-tile mt holds rows 16·(kM·w + mt) + {g, g+8} of the block; per row its running maximum (of
  // scale·s·log2 e) and this lane's part of the running sum (the 4 lanes' parts add up at the end).
  float o[kM][kD / 8][4], m[kM][2], l[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }
  auto row_of = [&](int mt, int half) { return i0 + 16 * (kM * w + mt) + g + 8 * half; };
  const int64_t kend = a.causal ? min(a.Tk, a.Tk - a.Tq + min(a.Tq - 1, i0 + kBlockRows - 1) + 1) : a.Tk;
  for (int64_t j0 = 0; j0 < kend; j0 += kN) {
    __syncthreads();  // every warp is done with the previous K/V tile (and, the first time, Q is staged)
    stage<H, kD, kN, kLd>(Ks, kb, L.k.st, j0, a.Tk, a.D);
    stage<H, kD, kN, kLd>(Vs, vb, L.v.st, j0, a.Tk, a.Dv);
    __syncthreads();

    // S = Q·Kᵀ: per 16 columns of the head dim, the warp's Q fragments, then two key n-tiles per ldmatrix.
    float s[kM][kN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kD; kk += 16) {
      uint32_t qa[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt)
        ptx::ldmatrix_x4<false>(qa[mt], ptx::ldmatrix_row<true>(Qs, kLd, 16 * (kM * w + mt), kk, lane));
#pragma unroll
      for (int nt = 0; nt < kN / 8; nt += 2) {
        uint32_t kf[4];
        ptx::ldmatrix_x4<false>(kf, ptx::ldmatrix_row<false>(Ks, kLd, 8 * nt, kk, lane));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          ptx::mma_16816<H>(s[mt][nt], qa[mt], kf[0], kf[1]);
          ptx::mma_16816<H>(s[mt][nt + 1], qa[mt], kf[2], kf[3]);
        }
      }
    }

    // Mask (only where the tile reaches past Tk, crosses the causal diagonal, or a key mask is given), scale, and
    // the online softmax, in place: s becomes P = 2^(x − m) (x = scale·s·log2 e).
    const bool edge = vrow || j0 + kN > a.Tk || (a.causal && j0 + kN - 1 > a.Tk - a.Tq + i0);
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t i = row_of(mt, half);
        float mx = m[mt][half];
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][2 * half + e];
            x *= scale2;
            if (edge) {
              int64_t j = j0 + 8 * nt + 2 * t + e;
              if (!(i < a.Tq && j < a.Tk && visible(a, i, j, vrow))) x = -INFINITY;
            }
            mx = fmaxf(mx, x);  // NaN scores skip the maximum and reach P (and the output) below
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row with no visible key yet keeps m = −inf: subtracting 0 instead gives p = 0 and corr = 0 (its O
        // and l are still 0), where −inf − (−inf) would give NaN.
        const float base = mx == -INFINITY ? 0.0f : mx;
        const float corr = exp2f(m[mt][half] - base);
        m[mt][half] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][2 * half + e];
            x = exp2f(x - base);
            sum += x;
          }
        l[mt][half] = l[mt][half] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
          o[mt][dt][2 * half] *= corr;
          o[mt][dt][2 * half + 1] *= corr;
        }
      }

    // O += P·V: the C fragments of key n-tiles 2c and 2c+1 are, rounded to H, the A fragment of keys 16c..16c+15.
#pragma unroll
    for (int c = 0; c < kN / 16; ++c) {
      uint32_t pa[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        pa[mt][0] = ptx::pack_half2<H>(s[mt][2 * c][0], s[mt][2 * c][1]);
        pa[mt][1] = ptx::pack_half2<H>(s[mt][2 * c][2], s[mt][2 * c][3]);
        pa[mt][2] = ptx::pack_half2<H>(s[mt][2 * c + 1][0], s[mt][2 * c + 1][1]);
        pa[mt][3] = ptx::pack_half2<H>(s[mt][2 * c + 1][2], s[mt][2 * c + 1][3]);
      }
#pragma unroll
      for (int dt = 0; dt < kD / 8; dt += 2) {
        uint32_t vf[4];  // V rows (keys) 16c.., columns 8·dt..: transposed, the B fragments of d-tiles dt, dt+1
        ptx::ldmatrix_x4<true>(vf, ptx::ldmatrix_row<true>(Vs, kLd, 16 * c, 8 * dt, lane));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          ptx::mma_16816<H>(o[mt][dt], pa[mt], vf[0], vf[1]);
          ptx::mma_16816<H>(o[mt][dt + 1], pa[mt], vf[2], vf[3]);
        }
      }
    }
  }

  // Each row's sum over its 4 lanes; O / l and lse = m + log l (natural units), or 0 and +inf for a row that saw no key.
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float sum = l[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int64_t i = row_of(mt, half);
      if (i >= a.Tq) continue;
      const float inv = sum > 0 ? 1.0f / sum : 0.0f;
      In* orow = out + L.o.at(bh, i);
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          int d = 8 * dt + 2 * t + e;
          if (d < a.Dv) orow[d] = narrow<In>(o[mt][dt][2 * half + e] * inv);
        }
      if (t == 0) lse[bh * a.Tq + i] = sum > 0 ? m[mt][half] / kLog2e + logf(sum) : INFINITY;
    }
}

template <class H, int kD, class In>
void forward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                    const Tensor& out, const Tensor& lse) {
  ForwardArgs<In, float> p(q, k, v, valid, out, lse);
  size_t smem = shared_bytes<kD>();
  allow_shared(forward_kernel<H, kD, In>, smem);
  dim3 grid(unsigned((a.Tq + block_rows<kD>() - 1) / block_rows<kD>()), unsigned(a.BH));
  forward_kernel<H, kD, In><<<grid, kBlock, smem, p.stream>>>(p.q, p.k, p.v, p.valid, p.out, p.lse, a, p.L);
}
}  // namespace fa

}  // namespace tc

// The kernel for a call: f(tag, kD) with kD the padded head dim (16/32/64/128) holding max(D, Dv), and tag
// Fma<float|double> (the FMA kernels) or Tc<bf16|f16> (tensor cores, under autocast, f32 activations). False
// for a shape none handles (head dims above 128, f64 under autocast): the op then runs its composite.
template <class T> struct Fma { using type = T; using input = T; static constexpr bool tensor_cores = false; };
template <class H, class In> struct Tc { using type = H; using input = In; static constexpr bool tensor_cores = true; };

template <class F>
bool with_kernel(const AttentionShape& a, DType dt, F&& f) {
  int64_t width = std::max(a.D, a.Dv);
  if (width > 128) return false;
  auto dims = [&](auto tag) {
    if (width <= 16) f(tag, std::integral_constant<int, 16>{});
    else if (width <= 32) f(tag, std::integral_constant<int, 32>{});
    else if (width <= 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (dt == DType::bf16) dims(Tc<__nv_bfloat16, __nv_bfloat16>{});  // half activations: read and written as they are
  else if (dt == DType::f16) dims(Tc<__half, __half>{});
  else if (a.autocast == DType::bf16 && dt == DType::f32) dims(Tc<__nv_bfloat16, float>{});
  else if (a.autocast == DType::f16 && dt == DType::f32) dims(Tc<__half, float>{});
  else if (a.autocast == DType::f32 && dt == DType::f32) dims(Fma<float>{});
  else if (a.autocast == DType::f32 && dt == DType::f64) dims(Fma<double>{});
  else return false;
  return true;
}

}  // namespace

bool attention_forward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                       const Tensor& out, const Tensor& lse) {
  // Empty shapes (no grid to launch) and head dims above 128 take the composite.
  if (a.BH == 0 || a.Tq == 0 || a.Tk == 0 || a.D == 0 || a.Dv == 0) return false;
  LD_CHECK(a.BH <= 65535, "scaled_dot_product_attention on CUDA: ", a.BH, " batch·heads exceed the grid's 65535");
  bool ok = with_kernel(a, q.dtype(), [&](auto tag, auto kd) {
    using T = typename decltype(tag)::type;
    constexpr int kD = decltype(kd)::value;
    if constexpr (decltype(tag)::tensor_cores)
      tc::fa::forward_launch<T, kD, typename decltype(tag)::input>(a, q, k, v, valid, out, lse);
    else forward_launch<T, kD>(a, q, k, v, valid, out, lse);
  });
  if (ok) LD_CUDA_LAUNCHED("scaled_dot_product_attention");
  return ok;
}

bool attention_backward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                        const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  bool ok = with_kernel(a, q.dtype(), [&](auto tag, auto kd) {
    using T = typename decltype(tag)::type;
    constexpr int kD = decltype(kd)::value;
    if constexpr (decltype(tag)::tensor_cores)
      tc::backward_launch<T, kD, typename decltype(tag)::input>(a, q, k, v, valid, out, lse, g, dq, dk, dv);
    else backward_launch<T, kD>(a, q, k, v, valid, out, lse, g, dq, dk, dv);
  });
  if (ok) LD_CUDA_LAUNCHED("scaled_dot_product_attention backward");
  return ok;
}

}  // namespace liandan::cuda_impl
