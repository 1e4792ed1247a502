// The CPU convolution kernels (core/cpu/conv.h): im2col + GEMM and the direct AVX-512 kernels.
#include "core/cpu/conv.h"

#include <array>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#include <immintrin.h>
#include "core/cpu/blas.h"
#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"

namespace liandan::cpu {

namespace conv_impl {  // the kernels and their helpers; the entry points below forward to them

// Output columns ox whose input column ox*stride - pad + j lies inside [0, W): [lo, hi).
inline std::pair<int64_t, int64_t> valid_cols(const ConvGeom& g, int64_t j) {
  int64_t lo = std::max<int64_t>(0, (g.pad - j + g.stride - 1) / g.stride);
  int64_t hi = std::min<int64_t>(g.Wo, (g.W - 1 + g.pad - j) / g.stride + 1);
  if (g.W - 1 + g.pad - j < 0) hi = 0;
  return {lo, std::max(lo, hi)};
}

// col[(c*kh + i)*kw + j, oy*Wo + ox] = x[c, oy*s - p + i, ox*s - p + j] (0 outside the image).
// Rows of `col` are `ldc` apart, so several images' columns can sit side by side. The valid column
// range is computed once per kernel offset, so the inner loop is a plain (often contiguous) copy.
template <class T>
void im2col_one(const ConvGeom& g, const T* x, T* col, int64_t ldc) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        auto [lo, hi] = valid_cols(g, j);
        T* dst = col + ((c * g.kh + i) * g.kw + j) * ldc;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          int64_t iy = oy * g.stride - g.pad + i;
          T* row = dst + oy * g.Wo;
          if (iy < 0 || iy >= g.H) {
            std::fill(row, row + g.Wo, T(0));
            continue;
          }
          const T* src = x + (c * g.H + iy) * g.W - g.pad + j;  // src[ox * stride] = x[c, iy, ox*s - p + j]
          std::fill(row, row + lo, T(0));
          if (g.stride == 1) std::copy(src + lo, src + hi, row + lo);
          else for (int64_t ox = lo; ox < hi; ++ox) row[ox] = src[ox * g.stride];
          std::fill(row + hi, row + g.Wo, T(0));
        }
      }
}

// The adjoint of im2col: dx[c, iy, ix] += dcol[...] (dx zeroed by the caller).
template <class T>
void col2im_one(const ConvGeom& g, const T* col, T* dx, int64_t ldc) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        auto [lo, hi] = valid_cols(g, j);
        const T* src = col + ((c * g.kh + i) * g.kw + j) * ldc;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
          int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.H) continue;
          T* row = dx + (c * g.H + iy) * g.W - g.pad + j;
          const T* s = src + oy * g.Wo;
          for (int64_t ox = lo; ox < hi; ++ox) row[ox * g.stride] += s[ox];
        }
      }
}

// Images per chunk: forward and backward work on chunks of images in parallel (see below).
constexpr int64_t kImageChunk = 8;

// Forward in chunks of images: their columns side by side make one GEMM per group with
// N = chunk * Ho * Wo (a small per-image GEMM runs far below BLAS's peak), then the chunk's
// [O, chunk*HW] result is copied out to [N, O, HW] with the bias added.
template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y) {
  int64_t HW = g.cols(), CHW = g.C * g.H * g.W, rows = g.C * g.kh * g.kw;
  int64_t nchunk = (g.N + kImageChunk - 1) / kImageChunk;
  cpu::parallel_range(nchunk, [&](int64_t c0, int64_t c1) {
    Tensor colt, ycht;
    T *col = cpu::scratch<T>(colt, rows * kImageChunk * HW), *ych = cpu::scratch<T>(ycht, g.O * kImageChunk * HW);
    for (int64_t c = c0; c < c1; ++c) {
      int64_t n0 = c * kImageChunk, nb = std::min(kImageChunk, g.N - n0), L = nb * HW;
      for (int64_t j = 0; j < nb; ++j) im2col_one(g, x + (n0 + j) * CHW, col + j * HW, L);
      for (int64_t gr = 0; gr < g.groups; ++gr)
        cpu::gemm_columns<T>(false, false, g.og(), L, g.krows(), T(1), w + gr * g.og() * g.krows(), g.krows(),
                             col + gr * g.krows() * L, L, T(0), ych + gr * g.og() * L, L);
      for (int64_t j = 0; j < nb; ++j)
        for (int64_t o = 0; o < g.O; ++o) {
          const T* src = ych + o * L + j * HW;
          T* dst = y + ((n0 + j) * g.O + o) * HW;
          T bo = b ? b[o] : T(0);
          for (int64_t s = 0; s < HW; ++s) dst[s] = src[s] + bo;
        }
    }
  }, work_grain(kImageChunk * g.O * HW * g.krows()));
}

// Backward in fixed chunks of images, in parallel: a chunk lays its images' columns side by side,
// so each group needs one GEMM with K = chunk * Ho * Wo for dW (and one for dcol) instead of one
// small GEMM per image. Chunk partial sums of dW and db are added in chunk order, so the result
// does not depend on the thread count.
template <class T>
void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  int64_t HW = g.cols(), CHW = g.C * g.H * g.W, rows = g.C * g.kh * g.kw;
  int64_t nchunk = (g.N + kImageChunk - 1) / kImageChunk;
  Tensor dw_partt;
  T* dw_part = dw ? cpu::scratch<T>(dw_partt, nchunk * g.O * g.krows()) : nullptr;
  std::vector<double> db_part(db ? static_cast<size_t>(nchunk * g.O) : 0);
  cpu::parallel_range(nchunk, [&](int64_t c0, int64_t c1) {
    Tensor colt, dyct;
    T *col = cpu::scratch<T>(colt, rows * kImageChunk * HW), *dyc = cpu::scratch<T>(dyct, g.O * kImageChunk * HW);
    for (int64_t c = c0; c < c1; ++c) {
      int64_t n0 = c * kImageChunk, nb = std::min(kImageChunk, g.N - n0), L = nb * HW;
      for (int64_t j = 0; j < nb; ++j)  // dyc[o, j*HW + s] = dy[n0 + j, o, s]
        for (int64_t o = 0; o < g.O; ++o)
          std::copy(dy + ((n0 + j) * g.O + o) * HW, dy + ((n0 + j) * g.O + o + 1) * HW, dyc + o * L + j * HW);
      if (db)
        for (int64_t o = 0; o < g.O; ++o) {
          double acc = 0;
          for (int64_t s = 0; s < L; ++s) acc += double(dyc[o * L + s]);
          db_part[c * g.O + o] = acc;
        }
      if (dw) {
        for (int64_t j = 0; j < nb; ++j) im2col_one(g, x + (n0 + j) * CHW, col + j * HW, L);
        for (int64_t gr = 0; gr < g.groups; ++gr)
          cpu::gemm_single_thread<T>(false, true, g.og(), g.krows(), L, T(1), dyc + gr * g.og() * L, L,
                                     col + gr * g.krows() * L, L, T(0), dw_part + (c * g.O + gr * g.og()) * g.krows(),
                                     g.krows());
      }
      if (dx) {
        T* dcol = col;  // reuse the buffer: dW is done with it
        for (int64_t gr = 0; gr < g.groups; ++gr)
          cpu::gemm_columns<T>(true, false, g.krows(), L, g.og(), T(1), w + gr * g.og() * g.krows(), g.krows(),
                               dyc + gr * g.og() * L, L, T(0), dcol + gr * g.krows() * L, L);
        for (int64_t j = 0; j < nb; ++j) {
          T* dxn = dx + (n0 + j) * CHW;
          std::fill(dxn, dxn + CHW, T(0));
          col2im_one(g, dcol + j * HW, dxn, L);
        }
      }
    }
  }, work_grain(2 * kImageChunk * g.O * HW * g.krows()));
  if (dw) {
    std::fill(dw, dw + g.O * g.krows(), T(0));
    for (int64_t c = 0; c < nchunk; ++c)
      for (int64_t i = 0; i < g.O * g.krows(); ++i) dw[i] += dw_part[c * g.O * g.krows() + i];
  }
  if (db)
    for (int64_t o = 0; o < g.O; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < nchunk; ++c) acc += db_part[c * g.O + o];
      db[o] = T(acc);
    }
}

// ================================================================ fast paths: stride 1, groups 1
// im2col + GEMM spends much of its time copying: im2col writes 9 shifted copies of the input, and
// OpenBLAS packs that column matrix again (with only 32-128 output channels there is little GEMM work
// per packed element). The shapes a U-Net is made of (3x3 and 1x1, stride 1) run direct kernels on the
// (zero-padded) images as they lie in memory; 1x1 ones with few channels stay GEMMs per image.
// Measured on the U-Net's shapes (1 thread, AVX-512): 110-140 GFLOP/s for the 3x3 forward, dx and dW,
// against 40-90 for im2col + GEMM.

namespace simd {
// Vector width and register count (GCC vector extensions: the same source is AVX-512, AVX2 or SSE
// code depending on -march).
#if defined(__AVX512F__)
constexpr int kBytes = 64, kRegs = 32;
#elif defined(__AVX__)
constexpr int kBytes = 32, kRegs = 16;
#else
constexpr int kBytes = 16, kRegs = 16;
#endif
template <class T> struct V;
template <> struct V<float> {
  typedef float v __attribute__((vector_size(kBytes)));
  typedef float u __attribute__((vector_size(kBytes), aligned(4), may_alias));  // unaligned access
  typedef int32_t ie;
  typedef ie idx __attribute__((vector_size(kBytes)));  // shuffle indices
};
template <> struct V<double> {
  typedef double v __attribute__((vector_size(kBytes)));
  typedef double u __attribute__((vector_size(kBytes), aligned(8), may_alias));
  typedef int64_t ie;
  typedef ie idx __attribute__((vector_size(kBytes)));
};
template <class T> constexpr int L = kBytes / int(sizeof(T));
template <class T> inline typename V<T>::v load(const T* p) { return *reinterpret_cast<const typename V<T>::u*>(p); }
template <class T> inline void store(T* p, typename V<T>::v x) { *reinterpret_cast<typename V<T>::u*>(p) = x; }

// Stores lanes [lo, hi) of x to p[lo .. hi) (p itself may lie before the buffer when lo > 0: masked
// lanes are never touched).
template <class T> inline void store_range(T* p, typename V<T>::v x, int64_t lo, int64_t hi) {
  if (lo == 0 && hi == L<T>) return store(p, x);
#if defined(__AVX512F__)
  unsigned mask = ((1u << hi) - 1) & ~((1u << lo) - 1);
  if constexpr (std::is_same_v<T, float>) _mm512_mask_storeu_ps(p, __mmask16(mask), __m512(x));
  else _mm512_mask_storeu_pd(p, __mmask8(mask), __m512d(x));
#else
  for (int64_t l = lo; l < hi; ++l) p[l] = x[l];
#endif
}

// In-register transpose of an L x L block (row i = m[i]) in log2(L) stages of two-vector shuffles: the
// stage with block size S swaps the off-diagonal S x S sub-blocks of every 2S x 2S block.
template <class T, int S, bool Hi, int... l>
constexpr typename V<T>::idx stage_idx(std::integer_sequence<int, l...>) {
  using E = typename V<T>::ie;
  return typename V<T>::idx{E(Hi ? ((l & S) ? L<T> + l : l + S) : ((l & S) ? L<T> + l - S : l))...};
}
template <class T, int S>
inline void transpose_stage(typename V<T>::v* m) {
  constexpr auto lo = stage_idx<T, S, false>(std::make_integer_sequence<int, L<T>>{});
  constexpr auto hi = stage_idx<T, S, true>(std::make_integer_sequence<int, L<T>>{});
  for (int i = 0; i < L<T>; ++i)
    if (!(i & S)) {
      auto a = m[i], b = m[i + S];
      m[i] = __builtin_shuffle(a, b, lo);
      m[i + S] = __builtin_shuffle(a, b, hi);
    }
  if constexpr (S > 1) transpose_stage<T, S / 2>(m);
}
template <class T>
inline void transpose(typename V<T>::v* m) { transpose_stage<T, L<T> / 2>(m); }
}  // namespace simd

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------- direct kernel (3x3 and 1x1)
// The output is vectorized over output channels: a tile is R rows of PW consecutive output pixels
// (PB = R * PW pixels) times OV vectors of output channels, PB * OV accumulators held in registers
// through the whole reduction over (input channel, kernel row, kernel column):
//   acc[p][v] += w[c][i][j][v] * x[c][(i + p / PW) * Wp + j + p % PW]     (w packed: [C][K][K][OV * L])
// Each step loads OV weight vectors and broadcasts PB input values, so the FMA units, not the loads,
// set the pace. `x` points at the tile's top-left input pixel of channel 0 in the zero-padded input
// (channel planes `plane` apart, rows Wp apart); the tile goes to tmp[p][OV * L], and with `add` the
// accumulators start from tmp (the sum over a chunk of channels is added to the previous chunks').
// Two-row tiles (R = 2) keep the registers busy on narrow images (7x7: 14 pixels per tile). A 1x1
// convolution is the same loop with one tap: a GEMM whose B operand is the image itself.
template <class T, int K, int OV, int R, int PW>
void tile(const T* x, int64_t plane, int64_t Wp, int64_t C, const T* w, T* tmp, bool add) {
  using Vt = typename simd::V<T>::v;
  constexpr int64_t L = simd::L<T>;
  constexpr int PB = R * PW;
  Vt acc[PB][OV];
  for (int p = 0; p < PB; ++p)
    for (int v = 0; v < OV; ++v) acc[p][v] = add ? simd::load(tmp + (p * OV + v) * L) : Vt{};
  for (int64_t c = 0; c < C; ++c, x += plane, w += K * K * OV * L)
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j) {
        Vt wv[OV];
        for (int v = 0; v < OV; ++v) wv[v] = simd::load(w + ((i * K + j) * OV + v) * L);
        const T* r = x + i * Wp + j;
        // Hide that taps j and j + 1 read the same pixels shifted by one: GCC would otherwise keep the
        // shared broadcasts alive across taps and spill accumulators to the stack.
        asm("" : "+r"(r));
        for (int p = 0; p < PB; ++p)
          for (int v = 0; v < OV; ++v) acc[p][v] += wv[v] * r[(p / PW) * Wp + p % PW];
      }
  for (int p = 0; p < PB; ++p)
    for (int v = 0; v < OV; ++v) simd::store(tmp + (p * OV + v) * L, acc[p][v]);
}

template <class T>
using TileFn = void (*)(const T*, int64_t, int64_t, int64_t, const T*, T*, bool);

// Largest tile (pixels) for OV vectors of channels: OV * PB accumulators + OV weights + 1 broadcast
// must fit in the registers, or GCC spills accumulators.
template <int OV> constexpr int kMaxPB = std::min(28, (simd::kRegs - OV - 1) / OV);

template <class T, int K, int OV, int R, size_t... P>
constexpr std::array<TileFn<T>, sizeof...(P)> tile_table(std::index_sequence<P...>) {
  return {&tile<T, K, OV, R, int(P) + 1>...};
}

// The kernel for K in {1, 3}, OV in {1, 2}, R in {1, 2} (R = 2 only with OV = 2), PW in [1, kMaxPB<OV> / R].
template <class T, int K>
TileFn<T> tile_fn_k(int ov, int r, int64_t pw) {
  static constexpr auto t1 = tile_table<T, K, 1, 1>(std::make_index_sequence<kMaxPB<1>>{});
  static constexpr auto t2 = tile_table<T, K, 2, 1>(std::make_index_sequence<kMaxPB<2>>{});
  static constexpr auto t22 = tile_table<T, K, 2, 2>(std::make_index_sequence<kMaxPB<2> / 2>{});
  return ov == 1 ? t1[size_t(pw - 1)] : r == 1 ? t2[size_t(pw - 1)] : t22[size_t(pw - 1)];
}
template <class T>
TileFn<T> tile_fn(int k, int ov, int r, int64_t pw) {
  return k == 1 ? tile_fn_k<T, 1>(ov, r, pw) : tile_fn_k<T, 3>(ov, r, pw);
}

// How a pass tiles its output: OV channel vectors, R rows, each row (pair) in nb nearly equal blocks.
struct TilePlan {
  int ov, r;
  int64_t nb;
  int64_t pw(int64_t Wo, int64_t k) const { return Wo / nb + (k < Wo % nb); }  // width of block k
};

// Two channel vectors unless one holds all outputs (conv_out of a 1-channel model); two rows per tile
// when a row leaves half the accumulators idle.
template <class T>
TilePlan plan_tiles(int64_t O, int64_t Wo) {
  int ov = O > simd::L<T> ? 2 : 1;
  int r = ov == 2 && 2 * Wo <= kMaxPB<2> ? 2 : 1;
  int64_t pbmax = ov == 1 ? kMaxPB<1> : kMaxPB<2>;
  return {ov, r, ceil_div(Wo, pbmax / r)};
}

// tmp [R * pw][B] (pixel-major, as tile leaves it) -> y[o][rr * Wo + (0 .. pw)] for o < no, rr < R, channel
// planes `ld` apart, plus the bias: L x L register transposes of L-pixel, L-channel blocks, then one
// (masked) store per channel and row.
template <class T>
void store_tile(const T* tmp, int R, int64_t pw, int64_t B, int64_t no, const T* b, T* y, int64_t Wo, int64_t ld) {
  using Vt = typename simd::V<T>::v;
  constexpr int L = simd::L<T>;
  const int64_t pb = R * pw;
  for (int64_t p0 = 0; p0 < pb; p0 += L)
    for (int64_t c0 = 0; c0 < no; c0 += L) {
      Vt m[L];
      int64_t np = std::min<int64_t>(L, pb - p0), nc = std::min<int64_t>(L, no - c0);
      for (int64_t p = 0; p < L; ++p) m[p] = p < np ? simd::load(tmp + (p0 + p) * B + c0) : Vt{};
      simd::transpose<T>(m);  // m[c] = channel c0 + c at pixels p0 .. p0 + L
      for (int64_t c = 0; c < nc; ++c) {
        Vt v = b ? m[c] + b[c0 + c] : m[c];
        T* yc = y + (c0 + c) * ld;
        // lanes [lo, hi) of this vector are pixels p0 + lo .. of tile row rr
        for (int64_t rr = p0 / pw; rr < R && rr * pw < p0 + np; ++rr) {
          int64_t lo = std::max<int64_t>(0, rr * pw - p0), hi = std::min<int64_t>(np, (rr + 1) * pw - p0);
          simd::store_range(yc + rr * Wo + p0 - rr * pw, v, lo, hi);
        }
      }
    }
}

// Packs w [O][C][K][K] for tile in blocks of B = OV * L output channels: wp[ob][c][i][j][B] (zeros
// past O). With `adjoint` the roles swap for dx: output channels are w's input channels, input
// channels w's output channels, and the kernel is flipped: wp[cb][o][i][j][B] = w[o][cb*B + l][K-1-i][K-1-j].
template <class T>
void pack_weights(const T* w, int64_t O, int64_t C, int64_t K, int64_t B, bool adjoint, T* wp) {
  const int64_t out = adjoint ? C : O, in = adjoint ? O : C, nob = ceil_div(out, B), KK = K * K;
  cpu::parallel_range(nob * in, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t ob = k / in, c = k % in;
      for (int64_t t = 0; t < KK; ++t) {
        T* dst = wp + (k * KK + t) * B;
        for (int64_t l = 0; l < B; ++l) {
          int64_t o = ob * B + l;
          dst[l] = o >= out ? T(0) : adjoint ? w[(c * C + o) * KK + (KK - 1 - t)] : w[(o * C + c) * KK + t];
        }
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / (KK * B)));
}

// x [N][C][H][W] -> xp [N][C][H + 2p][W + 2p] with zero borders. The source usually comes from memory
// (it was written long before): the next plane is prefetched while this one is copied.
template <class T>
void pad_images(const T* x, int64_t NC, int64_t H, int64_t W, int64_t p, T* xp) {
  int64_t Hp = H + 2 * p, Wp = W + 2 * p;
  cpu::parallel_range(NC, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      T* dst = xp + k * Hp * Wp;
      const T* src = x + k * H * W;
      if (k + 1 < e) {
        const char* q = reinterpret_cast<const char*>(src + H * W);
        for (int64_t off = 0; off < H * W * int64_t(sizeof(T)); off += 64) __builtin_prefetch(q + off);
      }
      std::fill(dst, dst + p * Wp + p, T(0));
      for (int64_t y = 0; y < H; ++y) {
        T* row = dst + (p + y) * Wp + p;
        std::memcpy(row, src + y * W, size_t(W) * sizeof(T));
        std::fill(row + W, row + W + 2 * p, T(0));  // right border of this row, left border of the next
      }
      std::fill(dst + (p + H) * Wp + p, dst + Hp * Wp, T(0));
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, Hp * Wp)));
}

// Weights one tile pass may stream per channel chunk: they should stay in L1 (48 KiB on the machines
// this was tuned on) next to the input rows. Channels beyond it are done in chunks, each tile's partial
// sums parked in a per-thread buffer between chunks (like a GEMM's K blocking).
constexpr int64_t kTileWeightBytes = 20 * 1024;

// y[n][o] = b[o] + sum_c convKxK(x[n][c], w[o][c]) (K = 1 or 3), stride 1, padding `pad`; x: [N][C][H][W],
// y: [N][O][H + 2 pad - K + 1][W + 2 pad - K + 1]. With `adjoint`, w is [C][O][K][K] and is applied
// flipped and transposed: the dx of a convolution. Parallel over (image, block of output channels),
// image-major: a thread zero-pads an image into its own buffer (in L2) when it starts on it, and its
// following tasks on the same image reuse it. Each output is written by exactly one tile, and its sum
// runs over channel chunks in order: the result does not depend on the thread count.
template <class T>
void direct(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t pad, const T* x, const T* w,
            bool adjoint, const T* b, T* y, DType dt) {
  constexpr int64_t L = simd::L<T>;
  const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad, Ho = Hp - K + 1, Wo = Wp - K + 1, plane = Hp * Wp;
  const TilePlan pl = plan_tiles<T>(O, Wo);
  const int64_t B = pl.ov * L, nob = ceil_div(O, B), nrow = ceil_div(Ho, pl.r);
  const int64_t cb = std::max<int64_t>(1, kTileWeightBytes / (K * K * B * int64_t(sizeof(T))));
  const int64_t nchunk = ceil_div(C, cb);
  Tensor wpt = empty({nob * B * C * K * K}, dt);
  T* wp = wpt.data_ptr<T>();
  pack_weights(w, adjoint ? C : O, adjoint ? O : C, K, B, adjoint, wp);
  cpu::parallel_range(N * nob, [&](int64_t t0, int64_t t1) {
    // every tile of one (image, output block) when the channels come in chunks, else one tile
    Tensor buft, xpadt;
    T* const buf = cpu::scratch<T>(buft, nchunk > 1 ? nrow * pl.r * Wo * B : kMaxPB<1> * B);
    T* const xpad = pad > 0 ? cpu::scratch<T>(xpadt, C * plane) : nullptr;
    int64_t padded_n = -1;
    for (int64_t task = t0; task < t1; ++task) {
      int64_t n = task / nob, ob = task % nob, o0 = ob * B, no = std::min(B, O - o0);
      const T* xn = x + n * C * H * W;
      if (pad > 0) {
        if (padded_n != n) pad_images(xn, C, H, W, pad, xpad);
        padded_n = n;
        xn = xpad;
      }
      for (int64_t ch = 0; ch < nchunk; ++ch) {
        int64_t c0 = ch * cb, nc = std::min(cb, C - c0);
        const T* wb = wp + (ob * C + c0) * K * K * B;
        const T* xb = xn + c0 * plane;
        T* tl = buf;
        for (int64_t oy = 0; oy < Ho; oy += pl.r) {
          int r = int(std::min<int64_t>(pl.r, Ho - oy));  // an odd last row gets a one-row tile
          for (int64_t k = 0, ox0 = 0; k < pl.nb; ++k) {
            int64_t pw = pl.pw(Wo, k);
            tile_fn<T>(int(K), pl.ov, r, pw)(xb + oy * Wp + ox0, plane, Wp, nc, wb, tl, ch > 0);
            if (ch + 1 == nchunk)
              store_tile(tl, r, pw, B, no, b ? b + o0 : nullptr, y + ((n * O + o0) * Ho + oy) * Wo + ox0, Wo,
                         Ho * Wo);
            if (nchunk > 1) tl += r * pw * B;
            ox0 += pw;
          }
        }
      }
    }
  }, work_grain(Ho * Wo * C * K * K * B));
}

// dW of a 3x3 convolution, vectorized over output channels like the forward: a tile is one input
// channel c (9 taps) times OV vectors of output channels, accumulating
//   acc[i*3 + j][v] += dyT[oy][ox][v] * xp[c][(oy + i) * Wp + ox + j]
// over the pixels of `nimg` images (xp and dyT images xs and ds apart). dyT is dy transposed to
// [pixel][channel] (rows ldo apart).
template <class T, int OV>
void dw3_rows(const T* xp, int64_t xs, int64_t Wp, int64_t Ho, int64_t Wo, const T* dyT, int64_t ds, int64_t ldo,
              int64_t nimg, T* accm) {
  using Vt = typename simd::V<T>::v;
  constexpr int64_t L = simd::L<T>;
  Vt acc[9][OV];
  for (int t = 0; t < 9; ++t)
    for (int v = 0; v < OV; ++v) acc[t][v] = simd::load(accm + (t * OV + v) * L);
  for (int64_t n = 0; n < nimg; ++n, xp += xs, dyT += ds)
    for (int64_t oy = 0; oy < Ho; ++oy) {
      const T* d = dyT + oy * Wo * ldo;
      for (int64_t ox = 0; ox < Wo; ++ox, d += ldo) {
        const T* r = xp + oy * Wp + ox;
        asm("" : "+r"(r));  // no predictive commoning of the taps across pixels (it spills accumulators)
        Vt dv[OV];
        for (int v = 0; v < OV; ++v) dv[v] = simd::load(d + v * L);
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) acc[i * 3 + j][v] += dv[v] * r[i * Wp + j];
      }
    }
  for (int t = 0; t < 9; ++t)
    for (int v = 0; v < OV; ++v) simd::store(accm + (t * OV + v) * L, acc[t][v]);
}

// Output channel blocks of the dW kernel: B = 2 vectors of channels (1 when one vector holds them all);
// dyT rows are ldo = B * ceil(O / B) wide.
template <class T> int64_t dw_block(int64_t O) { return O > simd::L<T> ? 2 * simd::L<T> : simd::L<T>; }

// dW [O][C][3][3] = sum over images and pixels of dy x shifted x, from x [N][C][H][W] (padding `pad`)
// and dyT [N][Ho * Wo][ldo]. Tiles (input channel, output block) are split over threads; every thread
// walks the images in order, in small groups, zero-pads its tiles' channels of the group into its own
// buffer, and keeps its tiles' accumulators in memory between groups: each dW element is summed in the
// same order (images, then pixels) for any thread count.
template <class T>
void direct3_dw(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t pad, const T* x, const T* dyT, T* dw,
                DType dt) {
  const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad, Ho = Hp - 2, Wo = Wp - 2, plane = Hp * Wp;
  const int64_t B = dw_block<T>(O), nob = ceil_div(O, B), ldo = nob * B, ntile = C * nob;
  // Images in groups of at least ~200 pixels, so small images still give each call a long run.
  const int64_t G = std::max<int64_t>(1, 200 / (Ho * Wo)), ds = Ho * Wo * ldo;
  Tensor acct = zeros({ntile * 9 * B}, dt);
  T* acc = acct.data_ptr<T>();
  cpu::parallel_range(ntile, [&](int64_t t0, int64_t t1) {
    const int64_t cl = t0 / nob, cs = (t1 - 1) / nob + 1 - cl;  // this thread's channels [cl, cl + cs)
    Tensor xpadt;
    T* const xpad = cpu::scratch<T>(xpadt, G * cs * plane);
    for (int64_t n = 0; n < N; n += G) {
      const int64_t ni = std::min(G, N - n);
      for (int64_t i = 0; i < ni; ++i) pad_images(x + ((n + i) * C + cl) * H * W, cs, H, W, pad, xpad + i * cs * plane);
      for (int64_t t = t0; t < t1; ++t) {
        int64_t c = t / nob, ob = t % nob;
        const T* xc = xpad + (c - cl) * plane;
        const T* d = dyT + n * ds + ob * B;
        if (B > simd::L<T>) dw3_rows<T, 2>(xc, cs * plane, Wp, Ho, Wo, d, ds, ldo, ni, acc + t * 9 * B);
        else dw3_rows<T, 1>(xc, cs * plane, Wp, Ho, Wo, d, ds, ldo, ni, acc + t * 9 * B);
      }
    }
  }, work_grain(N * Ho * Wo * 9 * B));
  cpu::parallel_range(O, [&](int64_t o0, int64_t o1) {  // acc[c][ob][tap][l] -> dw[o][c][tap]
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < 9; ++t) dw[(o * C + c) * 9 + t] = acc[((c * nob + o / B) * 9 + t) * B + o % B];
  }, std::max<int64_t>(1, kParallelGrain / (9 * C)));
}

// src [O][HW] -> dst [HW][ldo] (one image), columns O .. ldo zero: L x L register transposes, scalar
// copies for the ragged edges.
template <class T>
void transpose_image(const T* src, int64_t O, int64_t HW, int64_t ldo, T* dst) {
  using Vt = typename simd::V<T>::v;
  constexpr int64_t L = simd::L<T>;
  const int64_t Of = O / L * L, Pf = HW / L * L;
  for (int64_t p0 = 0; p0 < Pf; p0 += L)
    for (int64_t o0 = 0; o0 < Of; o0 += L) {
      Vt m[L];
      for (int64_t l = 0; l < L; ++l) m[l] = simd::load(src + (o0 + l) * HW + p0);
      simd::transpose<T>(m);
      for (int64_t l = 0; l < L; ++l) simd::store(dst + (p0 + l) * ldo + o0, m[l]);
    }
  for (int64_t p = 0; p < HW; ++p) {
    int64_t o = p < Pf ? Of : 0;
    for (; o < O; ++o) dst[p * ldo + o] = src[o * HW + p];
    for (; o < ldo; ++o) dst[p * ldo + o] = T(0);
  }
}

// One pass over dy for the backward of the 3x3 direct path, per image: dyT = dy transposed (dW; null:
// not needed) and dbp[n][o] = sum of dy[n][o] (db; null: not needed).
template <class T>
void prep_dy(const T* dy, int64_t N, int64_t O, int64_t HW, T* dyT, int64_t ldo, double* dbp) {
  cpu::parallel_range(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* src = dy + n * O * HW;
      if (dyT) transpose_image(src, O, HW, ldo, dyT + n * HW * ldo);
      if (dbp)
        for (int64_t o = 0; o < O; ++o) dbp[n * O + o] = double(cpu::row_sum(src + o * HW, HW));
    }
  }, work_grain(O * HW));
}

// db[o] = sum over images and pixels of dy (in double, one output per channel: deterministic).
template <class T>
void bias_grad(const T* dy, int64_t N, int64_t O, int64_t HW, T* db) {
  cpu::parallel_range(O, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += double(cpu::row_sum(dy + (n * O + o) * HW, HW));
      db[o] = T(acc);
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, N * HW)));
}

// A 1x1 convolution with few input channels does too little work per output for the direct tiles
// (their transposed stores dominate): y[n] = W [O, C] @ x[n] [C, HW] and dx[n] = W^T @ dy[n] as one GEMM
// per image, images split over threads (and a single image's GEMM over fixed column blocks: gemm_columns).
constexpr int64_t kDirect1x1MinChannels = 128;

template <class T>
void conv1x1_gemm(int64_t N, int64_t C, int64_t HW, int64_t O, const T* w, bool transposed, const T* x, const T* b,
                  T* y) {
  const int64_t in = transposed ? O : C, out = transposed ? C : O;
  cpu::parallel_range(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      T* yn = y + n * out * HW;
      cpu::gemm_columns<T>(transposed, false, out, HW, in, T(1), w, C, x + n * in * HW, HW, T(0), yn, HW);
      if (b)
        for (int64_t o = 0; o < out; ++o)
          for (int64_t s = 0; s < HW; ++s) yn[o * HW + s] += b[o];
    }
  }, work_grain(out * HW * in));
}

// dW of a 1x1 convolution: sum_n dy[n] [O, HW] @ x[n]^T [HW, C], a GEMM per image accumulated in fixed
// chunks of images that are added in chunk order (deterministic); each GEMM is single-threaded, also when
// there is one chunk (OpenBLAS's own threading would make the bits depend on the thread count).
template <class T>
void conv1x1_dw(int64_t N, int64_t C, int64_t HW, int64_t O, const T* x, const T* dy, T* dw, DType dt) {
  int64_t nchunk = ceil_div(N, kImageChunk);
  Tensor part = empty({nchunk * O * C}, dt);
  T* p = part.data_ptr<T>();
  cpu::parallel_range(nchunk, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch)
      for (int64_t n = ch * kImageChunk; n < std::min(N, (ch + 1) * kImageChunk); ++n)
        cpu::gemm_single_thread<T>(false, true, O, C, HW, T(1), dy + n * O * HW, HW, x + n * C * HW, HW,
                                   T(n == ch * kImageChunk ? 0 : 1), p + ch * O * C, C);
  }, work_grain(kImageChunk * O * C * HW));
  std::copy(p, p + O * C, dw);
  for (int64_t ch = 1; ch < nchunk; ++ch)
    for (int64_t i = 0; i < O * C; ++i) dw[i] += p[ch * O * C + i];
}

// Stride 1, no groups, and 3x3 (padding up to 2) or 1x1 (no padding): the direct kernel. Everything
// else: im2col + GEMM.
bool direct_path(const ConvGeom& g) {
  return g.groups == 1 && g.stride == 1 &&
         ((g.kh == 3 && g.kw == 3 && g.pad <= 2) || (g.kh == 1 && g.kw == 1 && g.pad == 0));
}

// The direct path. Backward, 3x3: one pass over dy makes the transposed dy for dW and the per-image
// sums for db, dx is the direct pass over dy (padding 2 - pad) with the flipped, transposed kernel;
// 1x1: dx is the direct pass over dy as it is (or a GEMM, with few channels), dW a GEMM per image.
template <class T>
void direct_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y, DType dt) {
  if (g.kh == 1 && g.C < kDirect1x1MinChannels) conv1x1_gemm(g.N, g.C, g.H * g.W, g.O, w, false, x, b, y);
  else direct(g.N, g.C, g.H, g.W, g.O, g.kh, g.pad, x, w, false, b, y, dt);
}

template <class T>
void direct_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, DType dt) {
  const T* nob = nullptr;  // no bias for dx
  if (g.kh == 1) {
    if (dx && g.O < kDirect1x1MinChannels) conv1x1_gemm(g.N, g.C, g.H * g.W, g.O, w, true, dy, nob, dx);
    else if (dx) direct(g.N, g.O, g.Ho, g.Wo, g.C, 1, 0, dy, w, true, nob, dx, dt);
    if (dw) conv1x1_dw(g.N, g.C, g.H * g.W, g.O, x, dy, dw, dt);
    if (db) bias_grad(dy, g.N, g.O, g.Ho * g.Wo, db);
    return;
  }
  const int64_t ldo = ceil_div(g.O, dw_block<T>(g.O)) * dw_block<T>(g.O);
  Tensor dyT = dw ? empty({g.N * g.Ho * g.Wo * ldo}, dt) : Tensor();
  std::vector<double> dbp(db ? size_t(g.N * g.O) : 0);
  if (dw || db) prep_dy(dy, g.N, g.O, g.Ho * g.Wo, dw ? dyT.data_ptr<T>() : nullptr, ldo, db ? dbp.data() : nullptr);
  if (dx) direct(g.N, g.O, g.Ho, g.Wo, g.C, 3, 2 - g.pad, dy, w, true, nob, dx, dt);
  if (dw) direct3_dw(g.N, g.C, g.H, g.W, g.O, g.pad, x, dyT.data_ptr<T>(), dw, dt);
  if (db)
    for (int64_t o = 0; o < g.O; ++o) {
      double acc = 0;
      for (int64_t n = 0; n < g.N; ++n) acc += dbp[size_t(n * g.O + o)];
      db[o] = T(acc);
    }
}

}  // namespace conv_impl

bool direct_path(const ConvGeom& g) { return conv_impl::direct_path(g); }
template <class T> void direct_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y, DType dt) {
  conv_impl::direct_forward<T>(g, x, w, b, y, dt);
}
template <class T>
void direct_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, DType dt) {
  conv_impl::direct_backward<T>(g, x, w, dy, dx, dw, db, dt);
}
template <class T> void im2col(const ConvGeom& g, const T* x, T* col, int64_t ldc) { conv_impl::im2col_one(g, x, col, ldc); }
template <class T> void col2im(const ConvGeom& g, const T* col, T* dx, int64_t ldc) { conv_impl::col2im_one(g, col, dx, ldc); }
template <class T> void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y) {
  conv_impl::conv_forward<T>(g, x, w, b, y);
}
template <class T> void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  conv_impl::conv_backward<T>(g, x, w, dy, dx, dw, db);
}

// The two element types conv2d dispatches to.
#define LD_CONV_INSTANTIATE(T)                                                                                  \
  template void direct_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, DType);                  \
  template void direct_backward<T>(const ConvGeom&, const T*, const T*, const T*, T*, T*, T*, DType);         \
  template void conv_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*);                            \
  template void conv_backward<T>(const ConvGeom&, const T*, const T*, const T*, T*, T*, T*);                \
  template void im2col<T>(const ConvGeom&, const T*, T*, int64_t);                                             \
  template void col2im<T>(const ConvGeom&, const T*, T*, int64_t);
LD_CONV_INSTANTIATE(float)
LD_CONV_INSTANTIATE(double)

}  // namespace liandan::cpu
