// Fused softmax attention on CUDA, flash-attention style (Dao et al. 2022; the backward as in FlashAttention-2):
// no Tq × Tk matrix is ever stored. Forward: a block of R query rows (one thread each) walks the keys in tiles
// of R staged in shared memory, keeping the running max m, the running sum l and the output accumulator
// (online softmax); it writes the output and lse = m + log l per row (+inf for a row that sees no key, whose
// output is 0: the CPU kernel's rule). Backward, with Di = Σ dO·O per query row:
//   p = exp(scale·q·k − lse),  dv_j += p·dO_i,  ds = p·(dO_i·v_j − Di),  dk_j += scale·ds·q_i,  dq_i += scale·ds·k_j
// computed twice without atomics: one kernel owns key rows (dk, dv), the other query rows (dq), so results
// are deterministic. Masks: causal (key j visible from query i iff j ≤ Tk − Tq + i, the KV-cache offset) and
// key_valid [B, Tk]. RoPE inside (AttentionShape's tables; tensor-core kernels): q and k rows are rotated as their
// tiles are staged, dQ and dK rotated back as they are stored, so no rotated copy exists. Operands are addressed by rows (HeadRows, core/device.h): q, k, v, dO may be strided views
// of [B, H, T, D] (the heads of a fused QKV projection), O, dQ, dK, dV are written as [B, T, H, D] rows, so no
// head split or merge copies a tensor. Head dims up to 128 (rows padded to the next of 32/64/128; larger ones take the
// composite). In f64 the arithmetic is plain FMA (the kernels below); in f32 (as 3xTF32), under bf16/f16 autocast
// and for half q, k, v, the tensor-core kernels of namespace tc (mma.sync, FlashAttention-2's register-resident form).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <type_traits>

#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"
#include "core/cuda/mma.cuh"
#include "core/cuda/tiles.cuh"

namespace liandan::cuda_impl {
namespace {

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

// The last key any query of the R rows from i0 on can see, plus one.
__device__ int64_t key_end(const AttentionShape& a, int64_t i0, int R) {
  int64_t last_row = min(a.Tq - 1, i0 + R - 1);
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
  int64_t kend = key_end(a, int64_t(blockIdx.x) * R, R);
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

// Di = Σ_d dO[i, d]·O[i, d], a warp per query row (r = bh·Tq + i): the lanes read a row's consecutive elements
// (coalesced), then a butterfly sum (fixed order: deterministic). T: dO's and O's elements, S: Di's.
template <class T, class S>
__global__ void attention_di_kernel(const T* g, const T* o, S* di, int64_t rows, int64_t Tq, int64_t Dv, Rows L) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; r < rows; r += warps) {
    const T *gr = g + L.g.at(r / Tq, r % Tq), *orow = o + L.o.at(r / Tq, r % Tq);
    S s = 0;
    for (int64_t d = lane; d < Dv; d += 32) s += S(widen(gr[d])) * S(widen(orow[d]));
    s = warp_sum(s);
    if (lane == 0) di[r] = s;
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
  int64_t kend = key_end(a, int64_t(blockIdx.x) * R, R);
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
    attention_di_kernel<T, S><<<blocks_for(a.BH * a.Tq * 32), kThreads, 0, stream>>>(g, ptr<T>(out), di, a.BH * a.Tq,
                                                                                     a.Tq, a.Dv, L);
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
// The same algorithm with the GEMMs of a tile on tensor cores (mma.sync m16n8k16, bf16 or f16 operands H, f32
// accumulation: core/cuda/mma.cuh), FlashAttention-2 style: every product's result stays in the registers of the
// warp that computed it. A warp owns 16·kM rows (queries; keys in the dK/dV kernel); a tile's scores come out as C
// fragments, the mask, softmax or dS step runs on them in place (a row's elements live in the 4 lanes of one lane
// group, so a row's max or sum is two xor-shuffles), and they go into the next product as A fragments — rounded
// to H and repacked, since a C fragment of two 8-column tiles has an A fragment's layout. Only the operands pass
// through shared memory (streamed tile by tile, see stream_tiles). H = float: f32 attention without autocast, the
// same kernels on f32 tiles with 3xTF32 products (m16n8k8), f32 accuracy. Under autocast the numbers are the autocast
// composite's: scores, probabilities and gradients rounded to H as GEMM operands; softmax, running max/sum, and
// outputs in f32. Head dims are padded with zeros to the next of 32/64/128. Exponentials are base 2 with the
// scale folded in (e^x = 2^(x·log2 e)), as FlashAttention's.
namespace tc {
using namespace tiles;
constexpr int kWarps = 4, kBlock = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
// Bytes for H tiles of `rows` padded rows in all, plus `floats` row statistics (each array rounded to 32).
template <int kD, class H> __host__ __device__ constexpr size_t shared_bytes(int rows, int floats) {
  return size_t(rows) * padded<kD, H>() * sizeof(H) + 32 * 8 + size_t(floats) * 4 + 32 * 4;
}
// Buffers for the streamed tiles (kTileRows rows each, plus kFloats statistics) next to kFixedRows rows staged once:
// two if that fits in 110 KiB (two blocks an SM), else one.
template <int kD, class H, int kFixedRows, int kTileRows, int kFloats>
__host__ __device__ constexpr int stream_stages() {
  return shared_bytes<kD, H>(kFixedRows + 2 * kTileRows, 2 * kFloats) <= 110 * 1024 ? 2 : 1;
}
template <int kD, class H, int kFixedRows, int kTileRows, int kFloats>
__host__ __device__ constexpr size_t stream_shared_bytes() {
  constexpr int n = stream_stages<kD, H, kFixedRows, kTileRows, kFloats>();
  return shared_bytes<kD, H>(kFixedRows + n * kTileRows, n * kFloats);
}

// RoPE of a row set as the kernels stage it (AttentionShape's tables): sequence row r sits at table row pos0 + r
// (keys: 0; queries: Tk − Tq). pairs = 0: no rotation.
struct RopeRows {
  const float *cos = nullptr, *sin = nullptr;
  int64_t pairs = 0, pos0 = 0;
  bool half = false;
};
__device__ RopeRows query_rope(const AttentionShape& a) { return {a.rope_cos, a.rope_sin, a.rope_pairs, a.Tk - a.Tq, a.rope_half}; }
__device__ RopeRows key_rope(const AttentionShape& a) { return {a.rope_cos, a.rope_sin, a.rope_pairs, 0, a.rope_half}; }

// Element c of row `row` after RoPE (core/ops/rope.h): x_c·cos + sign·x_partner·sin with the pair's angle, where
// sign = −1 for a pair's first element and +1 for its second; `inverse` flips the sign (the transposed rotation:
// the backward's). x(c) reads the row's element c as f32.
template <class X>
__device__ __forceinline__ float rope_element(const RopeRows& rp, int64_t row, int c, bool inverse, X x) {
  if (c >= 2 * rp.pairs) return x(c);
  const bool first = rp.half ? c < rp.pairs : (c & 1) == 0;
  const int i = rp.half ? (first ? c : c - int(rp.pairs)) : c >> 1;
  const int partner = rp.half ? (first ? c + int(rp.pairs) : c - int(rp.pairs)) : c ^ 1;
  const int64_t at = (rp.pos0 + row) * rp.pairs + i;
  const float cs = rp.cos[at], sn = rp.sin[at];
  return first != inverse ? x(c) * cs - x(partner) * sn : x(partner) * sn + x(c) * cs;
}

// rows × kD H tile from rows of `width` (f32, or already H), `ld` apart (row `first` on; zero past `total` or
// `width`), into shared rows kLd apart.
// Rows of full width (width = kD) whose elements start 16-byte aligned and stay so row to row go 16 bytes of the
// tile at a time (8 halves or 4 floats): one 16-byte load (two of f32 rows for a half tile) and one 16-byte shared
// store per thread and step, instead of 8 or 4 scalar ones — the staging of the K/V tiles otherwise issues as many
// load/store instructions as the MMAs need.
template <class H, int kD, int kTileRows, int kLd, class In>
__device__ bool stage_vectorized(H* dst, const In* src, int64_t ld, int64_t first, int64_t total, int64_t width) {
  constexpr int kV = 16 / sizeof(H), kPerRow = kD / kV;
  if (kD % kV != 0 || width != kD || ld % kV != 0 || reinterpret_cast<uintptr_t>(src) % (kV * sizeof(In)) != 0)
    return false;
  for (int t = threadIdx.x; t < kTileRows * kPerRow; t += blockDim.x) {
    int r = t / kPerRow, c = (t % kPerRow) * kV;
    int64_t row = first + r;
    uint4 packed = {0u, 0u, 0u, 0u};  // zeros past the last row (both half formats' 0 is all-zero bits)
    if (row < total) {
      const In* s = src + row * ld + c;
      if constexpr (std::is_same_v<In, H>) {
        ptx::cp_async_16(dst + r * kLd + c, s);  // straight to shared memory; waited for before the tile's barrier
        continue;
      } else if constexpr (sizeof(H) == 2) {
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

// A RoPE'd tile (q or k with RoPE inside the kernels): rotated in f32 on the way in and rounded to H once — the
// composite's numbers (rope, then the GEMM's cast). Registers, not cp.async: the rotation needs the values; 16 bytes
// of the tile a thread and step where the rows allow (a pair, or both halves' chunks, in one thread's hands).
template <class H, int kD, int kTileRows, int kLd, class In>
__device__ bool stage_rotated_vectorized(H* dst, const In* src, int64_t ld, int64_t first, int64_t total,
                                         int64_t width, const RopeRows& rp) {
  constexpr int kV = 16 / sizeof(H), kPerRow = kD / kV;
  if (kD % kV != 0 || width != kD || ld % kV != 0 || (2 * rp.pairs) % kV != 0 || (rp.half && rp.pairs % kV != 0) ||
      reinterpret_cast<uintptr_t>(src) % (kV * sizeof(In)) != 0)
    return false;
  for (int t = threadIdx.x; t < kTileRows * kPerRow; t += blockDim.x) {
    int r = t / kPerRow, c = (t % kPerRow) * kV;
    int64_t row = first + r;
    H h[kV];
    if (row < total) {
      const In* s = src + row * ld;
      float x[2][kV];  // this chunk (columns c..), and its partner chunk for split halves
      const int pc = rp.half && c < 2 * rp.pairs ? (c < rp.pairs ? c + int(rp.pairs) : c - int(rp.pairs)) : c;
      for (int part = 0; part < (pc != c ? 2 : 1); ++part) {
        const In* chunk = s + (part ? pc : c);
        if constexpr (sizeof(In) == 2) {
          uint4 raw = *reinterpret_cast<const uint4*>(chunk);
          In v[8];
          memcpy(v, &raw, sizeof(raw));
#pragma unroll
          for (int e = 0; e < kV; ++e) x[part][e] = float(widen(v[e]));
        } else {
#pragma unroll
          for (int e = 0; e < kV; e += 4) {
            float4 f = *reinterpret_cast<const float4*>(chunk + e);
            x[part][e] = f.x, x[part][e + 1] = f.y, x[part][e + 2] = f.z, x[part][e + 3] = f.w;
          }
        }
      }
#pragma unroll
      for (int e = 0; e < kV; ++e)
        h[e] = to_half<H>(rope_element(rp, row, c + e, false, [&](int col) {
          return col >= c && col < c + kV ? x[0][col - c] : x[1][col - pc];
        }));
    } else {
#pragma unroll
      for (int e = 0; e < kV; ++e) h[e] = to_half<H>(0.0f);
    }
    uint4 packed;  // one 16-byte shared store (a memcpy to an address not known to be aligned may go by bytes)
    memcpy(&packed, h, sizeof(packed));
    *reinterpret_cast<uint4*>(dst + r * kLd + c) = packed;
  }
  return true;
}

template <class H, int kD, int kTileRows, class In>
__device__ void stage(H* dst, const In* src, int64_t ld, int64_t first, int64_t total, int64_t width,
                      const RopeRows& rp = {}) {
  constexpr int kLd = padded<kD, H>();
  if (rp.pairs > 0) {
    if (stage_rotated_vectorized<H, kD, kTileRows, kLd, In>(dst, src, ld, first, total, width, rp)) return;
    for (int t = threadIdx.x; t < kTileRows * kD; t += blockDim.x) {
      int r = t / kD, c = t % kD;
      int64_t row = first + r;
      const In* s = src + row * ld;
      dst[r * kLd + c] = to_half<H>(row < total && c < width
                                        ? rope_element(rp, row, c, false, [&](int col) { return float(widen(s[col])); })
                                        : 0.0f);
    }
    return;
  }
  if constexpr (std::is_same_v<In, H> || std::is_same_v<In, float>)
    if (stage_vectorized<H, kD, kTileRows, kLd, In>(dst, src, ld, first, total, width)) return;
  for (int t = threadIdx.x; t < kTileRows * kD; t += blockDim.x) {
    int r = t / kD, c = t % kD;
    int64_t row = first + r;
    dst[r * kLd + c] = to_half<H>((row < total && c < width) ? float(widen(src[row * ld + c])) : 0.0f);
  }
}


// The tile column (key, or query in the transposed products) of element e (0, 1: the pair of columns) of n-tile nt
// of a C fragment from gemm_nt, for lane t of its group. Half tiles: columns 2t, 2t+1 as the fragment layout says.
// f32 tiles: gemm_nt reads B's rows permuted within each 8 (C column 2u holds row u, column 2u+1 row u+4), so that a
// lane's pair is (t, t+4) — exactly the A fragment of the next, m16n8k8 tf32, product: P·V needs no shuffles.
template <class H> __device__ __forceinline__ int column(int nt, int t, int e) {
  return sizeof(H) == 2 ? 8 * nt + 2 * t + e : 8 * nt + t + 4 * e;
}



// acc += P·B: P the warp's rows × kN (C fragments from gemm_nt, rounded to H here), B a kN × kD shared tile — P·V,
// Pᵀ·dO, dSᵀ·Q, dS·K. Half tiles: the C fragments of n-tiles 2c and 2c+1 are the A fragment of columns
// 16c..16c+15; B is read transposed, two 8-column d-tiles per ldmatrix. f32 tiles: n-tile c's C fragment is the A
// fragment (3xTF32) of columns 8c..8c+7, by gemm_nt's column order.
template <class H, int kD, int kM, int kN>
__device__ void gemm_pb(float (&acc)[kM][kD / 8][4], const float (&p)[kM][kN / 8][4], const H* B, int lane) {
  constexpr int kLd = padded<kD, H>();
  if constexpr (std::is_same_v<H, float>) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int c = 0; c < kN / 8; ++c) {
      uint32_t ab[kM][4], as[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        const float x[4] = {p[mt][c][0], p[mt][c][2], p[mt][c][1], p[mt][c][3]};  // (g, t) (g+8, t) (g, t+4) (g+8, t+4)
        ptx::split_tf32(x, ab[mt], as[mt]);
      }
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt) {
        const float* b = B + (8 * c + t) * kLd + 8 * dt + g;
        ptx::Tf32Pair b0 = ptx::split_tf32(b[0]), b1 = ptx::split_tf32(b[4 * kLd]);
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) ptx::mma_1688_3xtf32(acc[mt][dt], ab[mt], as[mt], b0, b1);
      }
    }
  } else {
#pragma unroll
    for (int c = 0; c < kN / 16; ++c) {
      uint32_t pa[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        pa[mt][0] = ptx::pack_half2<H>(p[mt][2 * c][0], p[mt][2 * c][1]);
        pa[mt][1] = ptx::pack_half2<H>(p[mt][2 * c][2], p[mt][2 * c][3]);
        pa[mt][2] = ptx::pack_half2<H>(p[mt][2 * c + 1][0], p[mt][2 * c + 1][1]);
        pa[mt][3] = ptx::pack_half2<H>(p[mt][2 * c + 1][2], p[mt][2 * c + 1][3]);
      }
#pragma unroll
      for (int dt = 0; dt < kD / 8; dt += 2) {
        uint32_t bf[4];
        ptx::ldmatrix_x4<true>(bf, ptx::ldmatrix_row<true>(B, kLd, 16 * c, 8 * dt, lane));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          ptx::mma_16816<H>(acc[mt][dt], pa[mt], bf[0], bf[1]);
          ptx::mma_16816<H>(acc[mt][dt + 1], pa[mt], bf[2], bf[3]);
        }
      }
    }
  }
}

// Row `half` (g or g+8) of an accumulator m-tile × f into global row `row` (its first `width` columns). With RoPE
// (dQ, dK: gradients of the rotated rows) rotated back first, `seq_row` being the row's sequence position: a pair's
// partner column is in the same lane — the next column (interleaved), or the same column P/8 tiles away (halves,
// P % 8 == 0: with_kernel's rule), picked by an unrolled select so the accumulators stay in registers.
template <int kD, class Out>
__device__ void store_row(Out* row, const float (&acc)[kD / 8][4], int half, int64_t width, float f, int t,
                          const RopeRows& rp = {}, int64_t seq_row = 0) {
#pragma unroll
  for (int dt = 0; dt < kD / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      int d = 8 * dt + 2 * t + e;
      if (d >= width) continue;
      float x = acc[dt][2 * half + e];
      if (rp.pairs > 0 && d < 2 * rp.pairs)
        x = rope_element(rp, seq_row, d, true, [&](int col) {
          if (col == d) return acc[dt][2 * half + e];
          if (!rp.half) return acc[dt][2 * half + (e ^ 1)];
          float p = 0.0f;
#pragma unroll
          for (int u = 0; u < kD / 8; ++u)
            if (8 * u + 2 * t + e == col) p = acc[u][2 * half + e];
          return p;
        });
      row[d] = narrow<Out>(x * f);
    }
}

// ---- forward: a warp's 16·kM query rows walk the key tiles of kN keys (online softmax).
template <int kD> __host__ __device__ constexpr int fwd_m_tiles() { return kD <= 64 ? 2 : 1; }  // O: 16·kM × kD a warp
template <int kD> __host__ __device__ constexpr int fwd_rows() { return kWarps * 16 * fwd_m_tiles<kD>(); }
constexpr int kFwdKeys = 64;

template <class H, int kD, class In>
__global__ void __launch_bounds__(kBlock) forward_kernel(const In* q, const In* k, const In* v, const float* valid,
                                                          In* out, float* lse, AttentionShape a, Rows L) {
  constexpr int kM = fwd_m_tiles<kD>(), kN = kFwdKeys, kBlockRows = fwd_rows<kD>(), kLd = padded<kD, H>();
  constexpr int kStages = stream_stages<kD, H, kBlockRows, 2 * kN, 0>();
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H* Qs = cv.take<H>(kBlockRows * kLd);
  H *Ks[kStages], *Vs[kStages];
  for (int b = 0; b < kStages; ++b) Ks[b] = cv.take<H>(kN * kLd), Vs[b] = cv.take<H>(kN * kLd);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // Query blocks last to first: under a causal mask the last rows see the most keys, and the longest blocks
  // starting first leave the short ones to fill the GPU's last wave (as FlashAttention-2 orders them).
  const int64_t bh = blockIdx.y, i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kBlockRows;
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  const float scale2 = float(a.scale) * kLog2e;
  stage<H, kD, kBlockRows>(Qs, qb, L.q.st, i0, a.Tq, a.D, query_rope(a));

  // Warp w's m-tile mt holds block rows 16·(kM·w + mt) + {g, g+8}; per row the running maximum (of
  // scale·s·log2 e) and this lane's part of the running sum (a row's 4 lanes add theirs up at the end).
  float o[kM][kD / 8][4], m[kM][2], l[kM][2];
  zero(o);
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
  auto row_of = [&](int mt, int half) { return i0 + 16 * (kM * w + mt) + g + 8 * half; };
  const int64_t kend = key_end(a, i0, kBlockRows);
  auto stage_kv = [&](int64_t j0, int b) {
    stage<H, kD, kN>(Ks[b], kb, L.k.st, j0, a.Tk, a.D, key_rope(a));
    stage<H, kD, kN>(Vs[b], vb, L.v.st, j0, a.Tk, a.Dv);
  };
  stream_tiles<kStages>(0, kend, kN, stage_kv, [&](int64_t j0, int b) {
    float s[kM][kN / 8][4];
    gemm_nt<H, kD, kM, kN>(s, Qs, 16 * kM * w, Ks[b], lane);

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
            const int64_t j = j0 + column<H>(nt, t, e);
            if (edge && !(i < a.Tq && j < a.Tk && visible(a, i, j, vrow))) x = -INFINITY;
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
        for (int dt = 0; dt < kD / 8; ++dt) o[mt][dt][2 * half] *= corr, o[mt][dt][2 * half + 1] *= corr;
      }
    gemm_pb<H, kD, kM, kN>(o, s, Vs[b], lane);  // O += P·V
  });

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
      store_row<kD>(out + L.o.at(bh, i), o[mt], half, a.Dv, sum > 0 ? 1.0f / sum : 0.0f, t);
      if (t == 0) lse[bh * a.Tq + i] = sum > 0 ? m[mt][half] / kLog2e + logf(sum) : INFINITY;
    }
}

// ---- backward: p = 2^(scale·s·log2 e − lse·log2 e) and dS = p ∘ (dP − Di) in registers, in two kernels without
// atomics: dK/dV (a warp owns 16 keys; products transposed, keys × queries) and dQ (a warp owns 16 queries).
constexpr int kBwdRows = kWarps * 16;
template <int kD> __host__ __device__ constexpr int dkv_queries() { return kD <= 64 ? 64 : 32; }  // registers
constexpr int kDqKeys = 64;

// P and dS in place of the scores s and dp (row r, column c of the tile: query, key given by at(r, c) → (i, j)).
// Ls and Ds are per-column (dK/dV: queries are columns) or per-row (dQ) values, picked by stat(r, c).
template <class H, int kN, class Pos, class Stat>
__device__ void probabilities_and_ds(const AttentionShape& a, const float* vrow, float (&s)[1][kN / 8][4],
                                     float (&dp)[1][kN / 8][4], float scale2, int g, int t, Pos at, Stat stat) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = g + 8 * (e >> 1), c = column<H>(nt, t, e & 1);
      int64_t i, j;
      at(r, c, i, j);
      float lse2, di;
      stat(r, c, lse2, di);
      const bool vis = i < a.Tq && j < a.Tk && lse2 != INFINITY && visible(a, i, j, vrow);
      const float p = vis ? exp2f(s[0][nt][e] * scale2 - lse2) : 0.0f;
      s[0][nt][e] = p;
      dp[0][nt][e] = p * (dp[0][nt][e] - di);
    }
}

// dK, dV for the block's 64 keys, walking the query tiles: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q.
template <class H, int kD, class In>
__global__ void __launch_bounds__(kBlock) dkv_kernel(const In* q, const In* k, const In* v, const float* valid,
                                                      const float* lse, const float* di, const In* g, In* dk, In* dv,
                                                      AttentionShape a, Rows L) {
  constexpr int kN = dkv_queries<kD>(), kLd = padded<kD, H>();
  constexpr int kStages = stream_stages<kD, H, 2 * kBwdRows, 2 * kN, 2 * kN>();
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *Ks = cv.take<H>(kBwdRows * kLd), *Vs = cv.take<H>(kBwdRows * kLd);
  H *Qs[kStages], *Gs[kStages];
  float *Ls[kStages], *Ds[kStages];
  for (int b = 0; b < kStages; ++b)
    Qs[b] = cv.take<H>(kN * kLd), Gs[b] = cv.take<H>(kN * kLd), Ls[b] = cv.take<float>(kN), Ds[b] = cv.take<float>(kN);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31, gi = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.y, j0 = int64_t(blockIdx.x) * kBwdRows;
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  const float scale2 = float(a.scale) * kLog2e;
  stage<H, kD, kBwdRows>(Ks, kb, L.k.st, j0, a.Tk, a.D, key_rope(a));
  stage<H, kD, kBwdRows>(Vs, vb, L.v.st, j0, a.Tk, a.Dv);
  float dk_acc[1][kD / 8][4], dv_acc[1][kD / 8][4];
  zero(dk_acc);
  zero(dv_acc);
  // Causal: queries before j0 − (Tk − Tq) see none of this block's keys.
  const int64_t istart = a.causal ? max(int64_t(0), j0 - (a.Tk - a.Tq)) : 0;
  auto stage_qg = [&](int64_t i0, int b) {
    stage<H, kD, kN>(Qs[b], qb, L.q.st, i0, a.Tq, a.D, query_rope(a));
    stage<H, kD, kN>(Gs[b], gb, L.g.st, i0, a.Tq, a.Dv);
    if (threadIdx.x < kN) {
      int64_t i = i0 + threadIdx.x;
      Ls[b][threadIdx.x] = i < a.Tq ? lse[bh * a.Tq + i] * kLog2e : INFINITY;
      Ds[b][threadIdx.x] = i < a.Tq ? di[bh * a.Tq + i] : 0.0f;
    }
  };
  stream_tiles<kStages>(istart, a.Tq, kN, stage_qg, [&](int64_t i0, int b) {
    float s[1][kN / 8][4], dp[1][kN / 8][4];
    gemm_nt<H, kD, 1, kN>(s, Ks, 16 * w, Qs[b], lane);  // rows: the warp's keys; columns: the tile's queries
    gemm_nt<H, kD, 1, kN>(dp, Vs, 16 * w, Gs[b], lane);
    probabilities_and_ds<H, kN>(
        a, vrow, s, dp, scale2, gi, t, [&](int r, int c, int64_t& i, int64_t& j) { i = i0 + c, j = j0 + 16 * w + r; },
        [&](int, int c, float& l2, float& d) { l2 = Ls[b][c], d = Ds[b][c]; });
    gemm_pb<H, kD, 1, kN>(dv_acc, s, Gs[b], lane);   // dV += Pᵀ·dO
    gemm_pb<H, kD, 1, kN>(dk_acc, dp, Qs[b], lane);  // dK += dSᵀ·Q
  });
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t j = j0 + 16 * w + gi + 8 * half;
    if (j >= a.Tk) continue;
    store_row<kD>(dv + L.dv.at(bh, j), dv_acc[0], half, a.Dv, 1.0f, t);
    store_row<kD>(dk + L.dk.at(bh, j), dk_acc[0], half, a.D, float(a.scale), t, key_rope(a), j);
  }
}

// dQ for the block's 64 queries, walking the key tiles: S = Q·Kᵀ, dP = dO·Vᵀ, dQ += dS·K.
template <class H, int kD, class In>
__global__ void __launch_bounds__(kBlock) dq_kernel(const In* q, const In* k, const In* v, const float* valid,
                                                     const float* lse, const float* di, const In* g, In* dq,
                                                     AttentionShape a, Rows L) {
  constexpr int kN = kDqKeys, kLd = padded<kD, H>();
  constexpr int kStages = stream_stages<kD, H, 2 * kBwdRows, 2 * kN, 0>();
  extern __shared__ unsigned char smem[];
  Carve cv{smem};
  H *Qs = cv.take<H>(kBwdRows * kLd), *Gs = cv.take<H>(kBwdRows * kLd);
  H *Ks[kStages], *Vs[kStages];
  for (int b = 0; b < kStages; ++b) Ks[b] = cv.take<H>(kN * kLd), Vs[b] = cv.take<H>(kN * kLd);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31, gi = lane >> 2, t = lane & 3;
  const int64_t bh = blockIdx.y, i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kBwdRows;  // (longest first, as forward)
  const In *qb = q + L.q.at(bh, 0), *kb = k + L.k.at(bh, 0), *vb = v + L.v.at(bh, 0), *gb = g + L.g.at(bh, 0);
  const float* vrow = valid ? valid + (bh / a.heads) * a.Tk : nullptr;
  const float scale2 = float(a.scale) * kLog2e;
  stage<H, kD, kBwdRows>(Qs, qb, L.q.st, i0, a.Tq, a.D, query_rope(a));
  stage<H, kD, kBwdRows>(Gs, gb, L.g.st, i0, a.Tq, a.Dv);
  float lse2[2], drow[2];  // the lane's two rows' lse·log2 e and Di
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = i0 + 16 * w + gi + 8 * half;
    lse2[half] = i < a.Tq ? lse[bh * a.Tq + i] * kLog2e : INFINITY;
    drow[half] = i < a.Tq ? di[bh * a.Tq + i] : 0.0f;
  }
  float dq_acc[1][kD / 8][4];
  zero(dq_acc);
  const int64_t kend = key_end(a, i0, kBwdRows);
  auto stage_kv = [&](int64_t j0, int b) {
    stage<H, kD, kN>(Ks[b], kb, L.k.st, j0, a.Tk, a.D, key_rope(a));
    stage<H, kD, kN>(Vs[b], vb, L.v.st, j0, a.Tk, a.Dv);
  };
  stream_tiles<kStages>(0, kend, kN, stage_kv, [&](int64_t j0, int b) {
    float s[1][kN / 8][4], dp[1][kN / 8][4];
    gemm_nt<H, kD, 1, kN>(s, Qs, 16 * w, Ks[b], lane);
    gemm_nt<H, kD, 1, kN>(dp, Gs, 16 * w, Vs[b], lane);
    probabilities_and_ds<H, kN>(
        a, vrow, s, dp, scale2, gi, t, [&](int r, int c, int64_t& i, int64_t& j) { i = i0 + 16 * w + r, j = j0 + c; },
        [&](int r, int, float& l2, float& d) { l2 = lse2[r >> 3], d = drow[r >> 3]; });
    gemm_pb<H, kD, 1, kN>(dq_acc, dp, Ks[b], lane);  // dQ += dS·K
  });
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t i = i0 + 16 * w + gi + 8 * half;
    if (i < a.Tq) store_row<kD>(dq + L.dq.at(bh, i), dq_acc[0], half, a.D, float(a.scale), t, query_rope(a), i);
  }
}

template <class H, int kD, class In>
void forward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                    const Tensor& out, const Tensor& lse) {
  ForwardArgs<In, float> p(q, k, v, valid, out, lse);
  size_t smem = stream_shared_bytes<kD, H, fwd_rows<kD>(), 2 * kFwdKeys, 0>();
  allow_shared(forward_kernel<H, kD, In>, smem);
  dim3 grid(unsigned((a.Tq + fwd_rows<kD>() - 1) / fwd_rows<kD>()), unsigned(a.BH));
  forward_kernel<H, kD, In><<<grid, kBlock, smem, p.stream>>>(p.q, p.k, p.v, p.valid, p.out, p.lse, a, p.L);
}

template <class H, int kD, class In>
void backward_launch(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                     const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv) {
  BackwardArgs<In, float> p(a, q, k, v, valid, out, lse, g, dq, dk, dv);
  size_t smem_kv = stream_shared_bytes<kD, H, 2 * kBwdRows, 2 * dkv_queries<kD>(), 2 * dkv_queries<kD>()>();
  allow_shared(dkv_kernel<H, kD, In>, smem_kv);
  dkv_kernel<H, kD, In><<<dim3(unsigned((a.Tk + kBwdRows - 1) / kBwdRows), unsigned(a.BH)), kBlock, smem_kv, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<In*>(dk.device_data()), static_cast<In*>(dv.device_data()),
      a, p.L);
  size_t smem_q = stream_shared_bytes<kD, H, 2 * kBwdRows, 2 * kDqKeys, 0>();
  allow_shared(dq_kernel<H, kD, In>, smem_q);
  dq_kernel<H, kD, In><<<dim3(unsigned((a.Tq + kBwdRows - 1) / kBwdRows), unsigned(a.BH)), kBlock, smem_q, p.stream>>>(
      p.q, p.k, p.v, p.valid, p.lse, p.di, p.g, static_cast<In*>(dq.device_data()), a, p.L);
}

}  // namespace tc

// The kernel for a call: f(tag, kD) with kD the padded head dim (32/64/128) holding max(D, Dv), and tag
// (no 16: heads that small are rare, their padding costs little, and each kD is 15 more kernels to compile)
// Fma<double> (the FMA kernels) or Tc<H, In> (tensor cores: H = bf16/f16 under autocast or for half activations,
// H = float for f32 without autocast, as 3xTF32 — f32 accuracy, as PyTorch's f32 SDPA on sm80+). False for a shape
// none handles (head dims above 128, f64 under autocast): the op then runs its composite.
template <class T> struct Fma { using type = T; using input = T; static constexpr bool tensor_cores = false; };
template <class H, class In> struct Tc { using type = H; using input = In; static constexpr bool tensor_cores = true; };

template <class F>
bool with_kernel(const AttentionShape& a, DType dt, F&& f) {
  int64_t width = std::max(a.D, a.Dv);
  if (width > 128) return false;
  // RoPE inside: the tensor-core kernels only; split-half pairs need P % 8 == 0 (store_row's partner tile).
  if (a.rope_pairs > 0 && (dt == DType::f64 || (a.rope_half && a.rope_pairs % 8 != 0))) return false;
  auto dims = [&](auto tag) {
    if (width <= 32) f(tag, std::integral_constant<int, 32>{});
    else if (width <= 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (dt == DType::bf16) dims(Tc<__nv_bfloat16, __nv_bfloat16>{});  // half activations: read and written as they are
  else if (dt == DType::f16) dims(Tc<__half, __half>{});
  else if (a.autocast == DType::bf16 && dt == DType::f32) dims(Tc<__nv_bfloat16, float>{});
  else if (a.autocast == DType::f16 && dt == DType::f32) dims(Tc<__half, float>{});
  else if (a.autocast == DType::f32 && dt == DType::f32) dims(Tc<float, float>{});  // 3xTF32 tensor cores
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
      tc::forward_launch<T, kD, typename decltype(tag)::input>(a, q, k, v, valid, out, lse);
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
