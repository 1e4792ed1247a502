// bf16 GEMM (see gemm_bf16.h): packing, the AVX512-BF16 micro-kernel, the tile loop over the thread pool, and the
// f32 fallback.
#include "core/cpu/gemm_bf16.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/cpu/blas.h"
#include "core/cpu/loops.h"
#include "core/error.h"

namespace liandan::cpu {

namespace {

// ---------------------------------------------------------------- blocking
// The micro-kernel's tile is kMR rows x kNR columns: kMR * kNV = 28 accumulators + kNV B vectors of the 32 zmm
// registers (A's pairs come as embedded broadcasts). A B micro-panel (kKC / 2 pairs x kNR columns x 4 bytes = 32 KB)
// stays in L1 while the A block (kMC x kKC x 2 bytes = 112 KB) streams from L2.
constexpr int kMR = 14, kNV = 2, kNR = 16 * kNV;
constexpr int64_t kKC = 512;   // K per packed block (even)
constexpr int64_t kMC = 112;   // rows per tile at most (a multiple of kMR)
constexpr int64_t kNC = 256;   // columns per tile at most (a multiple of kNR)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Tile sizes of a dimension of length n, unit u, at most cap: the fewest tiles, all (but the last) equal.
int64_t tile_size(int64_t n, int64_t cap, int64_t u) {
  const int64_t tiles = ceil_div(n, cap);
  return round_up(ceil_div(n, tiles), u);
}

uint32_t pair_bits(bf16_t lo, bf16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// ---------------------------------------------------------------- packing
// A panel of width W (kMR rows of op(A), or kNR columns of op(B)) over kp pairs of K, starting at k0:
// dst[p * W + w] = (x(w, k0 + 2p), x(w, k0 + 2p + 1)) as one 32-bit word, zeros beyond `width` and beyond K.
// Two layouts of the source: "words" — element w's K values are contiguous (its row at src + w * ld); "rows" — the
// K values are rows (element w of row k at src + k * ld + w).
template <int W>
void pack_words(const bf16_t* src, int64_t ld, int64_t width, int64_t k0, int64_t klen, uint32_t* dst) {
  const int64_t kp = ceil_div(klen, 2), full = klen / 2;
  for (int64_t w = 0; w < W; ++w) {
    if (w >= width) {
      for (int64_t p = 0; p < kp; ++p) dst[p * W + w] = 0;
      continue;
    }
    const bf16_t* s = src + w * ld + k0;
    for (int64_t p = 0; p < full; ++p) {
      uint32_t v;
      std::memcpy(&v, s + 2 * p, 4);
      dst[p * W + w] = v;
    }
    if (kp > full) dst[full * W + w] = pair_bits(s[2 * full], 0);
  }
}

template <int W>
void pack_rows(const bf16_t* src, int64_t ld, int64_t width, int64_t k0, int64_t klen, uint32_t* dst) {
  const int64_t kp = ceil_div(klen, 2);
  for (int64_t p = 0; p < kp; ++p) {
    const bf16_t* r0 = src + (k0 + 2 * p) * ld;
    const bf16_t* r1 = 2 * p + 1 < klen ? r0 + ld : nullptr;
    uint32_t* d = dst + p * W;
    if (width == W && r1) {
      for (int64_t w = 0; w < W; ++w) d[w] = pair_bits(r0[w], r1[w]);
    } else {
      for (int64_t w = 0; w < W; ++w) d[w] = w < width ? pair_bits(r0[w], r1 ? r1[w] : bf16_t(0)) : 0;
    }
  }
}

// op(A)[i0 .. i0+mc, k0 .. k0+klen] into panels of kMR rows, each kp * kMR words.
void pack_a(bool ta, const bf16_t* A, int64_t lda, int64_t i0, int64_t mc, int64_t k0, int64_t klen, uint32_t* dst) {
  const int64_t kp = ceil_div(klen, 2);
  for (int64_t r = 0; r * kMR < mc; ++r) {
    const int64_t i = i0 + r * kMR, w = std::min<int64_t>(kMR, mc - r * kMR);
    if (ta) pack_rows<kMR>(A + i, lda, w, k0, klen, dst + r * kp * kMR);
    else pack_words<kMR>(A + i * lda, lda, w, k0, klen, dst + r * kp * kMR);
  }
}

// op(B)[k0 .. k0+klen, j0 .. j0+nc] into panels of kNR columns, each kp * kNR words.
void pack_b(bool tb, const bf16_t* B, int64_t ldb, int64_t j0, int64_t nc, int64_t k0, int64_t klen, uint32_t* dst) {
  const int64_t kp = ceil_div(klen, 2);
  for (int64_t s = 0; s * kNR < nc; ++s) {
    const int64_t j = j0 + s * kNR, w = std::min<int64_t>(kNR, nc - s * kNR);
    if (tb) pack_words<kNR>(B + j * ldb, ldb, w, k0, klen, dst + s * kp * kNR);
    else pack_rows<kNR>(B + j, ldb, w, k0, klen, dst + s * kp * kNR);
  }
}

// ---------------------------------------------------------------- the AVX512-BF16 micro-kernel
// C[m x n] (m <= kMR, n <= kNR) of one A panel times one B panel over kp pairs. mode: 0 = C = alpha acc (C not
// read), 1 = C = alpha acc + beta C, 2 = C += alpha acc (a later K block). A bf16 C is read widened and written
// rounded to nearest even (the bits of float_to_bf16, NaN kept quiet).
#define LD_BF16_TARGET __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq")))
// (GCC 12 warns about its own _mm512_undefined_epi32() inside the AVX-512 intrinsics, a known false positive.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

LD_BF16_TARGET inline __m512 load_c(const float* c, __mmask16 m) { return _mm512_maskz_loadu_ps(m, c); }
LD_BF16_TARGET inline __m512 load_c(const bf16_t* c, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, c)), 16));
}
LD_BF16_TARGET inline void store_c(float* c, __mmask16 m, __m512 r) { _mm512_mask_storeu_ps(c, m, r); }
LD_BF16_TARGET inline void store_c(bf16_t* c, __mmask16 m, __m512 r) {
  const __m512i x = _mm512_castps_si512(r);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i y = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  y = _mm512_mask_or_epi32(y, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
  _mm256_mask_storeu_epi16(c, m, _mm512_cvtepi32_epi16(y));
}

template <class TC>
LD_BF16_TARGET void micro_bf16(int64_t kp, const uint32_t* a, const uint32_t* b, TC* c, int64_t ldc, int m, int n,
                               float alpha, float beta, int mode) {
  __m512 acc[kMR][kNV];
#pragma GCC unroll 32
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; ++p) {
    __m512bh bv[kNV];
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + p * kNR + 16 * v);
#pragma GCC unroll 32
    for (int i = 0; i < kMR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[p * kMR + i]));
#pragma GCC unroll 4
      for (int v = 0; v < kNV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 mask[kNV];
  for (int v = 0; v < kNV; ++v) {
    const int left = std::clamp(n - 16 * v, 0, 16);
    mask[v] = __mmask16(left == 16 ? 0xFFFF : (1u << left) - 1u);
  }
#pragma GCC unroll 32
  for (int i = 0; i < kMR; ++i) {
    if (i >= m) break;
    TC* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < kNV; ++v) {
      __m512 r = _mm512_mul_ps(va, acc[i][v]);
      if (mode == 1) r = _mm512_fmadd_ps(vb, load_c(ci + 16 * v, mask[v]), r);
      else if (mode == 2) r = _mm512_add_ps(load_c(ci + 16 * v, mask[v]), r);
      store_c(ci + 16 * v, mask[v], r);
    }
  }
}

#pragma GCC diagnostic pop

// ---------------------------------------------------------------- per-thread packing buffers
// Kept per thread across calls (a fresh mapping per call would page-fault every time), 64-byte aligned for the
// kernel's vector loads of B.
struct Buffers {
  struct Free { void operator()(void* p) const { std::free(p); } };
  std::unique_ptr<uint32_t, Free> a, b;
  size_t na = 0, nb = 0;
  static uint32_t* grow(std::unique_ptr<uint32_t, Free>& p, size_t& have, size_t want) {
    if (want > have) {
      p.reset(static_cast<uint32_t*>(std::aligned_alloc(64, size_t(round_up(int64_t(want * 4), 64)))));
      LD_CHECK(p, "gemm_bf16: cannot allocate ", want * 4, " bytes of packing buffer");
      have = want;
    }
    return p.get();
  }
};
Buffers& buffers() {
  thread_local Buffers b;
  return b;
}

// ---------------------------------------------------------------- tiles
// C is cut into tiles: columns in blocks of nc, rows in `rows` runs of whole kMR-row panels. An element's sum does
// not depend on the tile it falls in (K is cut in kKC blocks whatever the tile, and the micro-kernel does the same
// operations for every element of its register tile), so the grid may follow the thread count — rows are split
// until every thread gets the same number of tiles — and the result is still the same on any thread count.
// Tiles are numbered column by column; a thread's run of tiles in one column shares each packed B block.
struct Grid {
  int64_t M, N, K, nc, cols, panels, rows;
  int64_t row_begin(int64_t r) const { return std::min(M, (r * panels / rows) * kMR); }
};

Grid make_grid(int64_t M, int64_t N, int64_t K) {
  Grid g{M, N, K, tile_size(N, kNC, kNR), 0, ceil_div(M, kMR), 0};
  g.cols = ceil_div(N, g.nc);
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  g.rows = ceil_div(g.panels, kMC / kMR);
  while ((g.rows * g.cols) % threads != 0 && g.rows < g.panels) ++g.rows;
  return g;
}

template <class TC>
void run_tiles(const Grid& g, bool ta, bool tb, float alpha, const bf16_t* A, int64_t lda, const bf16_t* B,
               int64_t ldb, float beta, TC* C, int64_t ldc, int64_t t0, int64_t t1) {
  Buffers& buf = buffers();
  const int64_t kpmax = ceil_div(std::min(g.K, kKC), 2);
  uint32_t* pa = Buffers::grow(buf.a, buf.na, size_t(ceil_div(g.panels, g.rows) + 1) * kMR * size_t(kpmax));
  uint32_t* pb = Buffers::grow(buf.b, buf.nb, size_t(round_up(g.nc, kNR) * kpmax));
  for (int64_t t = t0; t < t1;) {
    const int64_t col = t / g.rows, tend = std::min(t1, (col + 1) * g.rows);
    const int64_t j0 = col * g.nc, nc = std::min(g.nc, g.N - j0);
    for (int64_t k0 = 0; k0 < g.K; k0 += kKC) {
      const int64_t klen = std::min(kKC, g.K - k0), kp = ceil_div(klen, 2);
      const int mode = k0 > 0 ? 2 : beta == 0.0f ? 0 : 1;
      pack_b(tb, B, ldb, j0, nc, k0, klen, pb);
      for (int64_t tt = t; tt < tend; ++tt) {
        const int64_t i0 = g.row_begin(tt % g.rows), mc = g.row_begin(tt % g.rows + 1) - i0;
        pack_a(ta, A, lda, i0, mc, k0, klen, pa);
        for (int64_t s = 0; s * kNR < nc; ++s)
          for (int64_t r = 0; r * kMR < mc; ++r)
            micro_bf16(kp, pa + r * kp * kMR, pb + s * kp * kNR, C + (i0 + r * kMR) * ldc + j0 + s * kNR, ldc,
                       int(std::min<int64_t>(kMR, mc - r * kMR)), int(std::min<int64_t>(kNR, nc - s * kNR)), alpha,
                       beta, mode);
      }
    }
    t = tend;
  }
}

template <class TC>
void native(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
            const bf16_t* B, int64_t ldb, float beta, TC* C, int64_t ldc) {
  const Grid g = make_grid(M, N, K);
  // A tile's multiply-adds; below ~2^18 per thread a parallel region costs more than it saves.
  const int64_t work = ceil_div(g.panels, g.rows) * kMR * g.nc * K;
  parallel_range(g.rows * g.cols, [&](int64_t t0, int64_t t1) {
    run_tiles(g, ta, tb, alpha, A, lda, B, ldb, beta, C, ldc, t0, t1);
  }, std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work, 1)));
}

// ---------------------------------------------------------------- the fallback: widen to f32, one sgemm
void widen(const bf16_t* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = bf16_to_float(src[r * ld + c]);
}

// The product in fixed blocks of kFallbackBlock x kFallbackBlock of C, each one single-threaded sgemm, the blocks
// spread over the pool: as in cpu::gemm_columns, the blocks depend only on the shape, so the bits do not depend on
// the thread count with any BLAS kernel (OpenBLAS's own threading splits C by the thread count).
constexpr int64_t kFallbackBlock = 256;

void fallback(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
              const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
  Tensor ha, hb;
  float *a = scratch<float>(ha, ar * ac), *b = scratch<float>(hb, br * bc);
  widen(A, ar, ac, lda, a);
  widen(B, br, bc, ldb, b);
  const int64_t rb = ceil_div(M, kFallbackBlock), cb = ceil_div(N, kFallbackBlock);
  const int64_t work = std::min(M, kFallbackBlock) * std::min(N, kFallbackBlock) * K;
  parallel_range(rb * cb, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = (t / cb) * kFallbackBlock, j = (t % cb) * kFallbackBlock;
      const int64_t m = std::min(kFallbackBlock, M - i), n = std::min(kFallbackBlock, N - j);
      gemm_single_thread<float>(ta, tb, m, n, K, alpha, ta ? a + i : a + i * ac, ac, tb ? b + j * bc : b + j, bc,
                                beta, C + i * ldc + j, ldc);
    }
  }, std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(work, 1)));
}

std::atomic<int> g_force{-1};  // -1: detect; 0/1: forced by gemm_bf16_force_fallback

bool detect() {
  const char* e = std::getenv("LIANDAN_CPU_BF16");
  if (e && std::strcmp(e, "0") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

// M, N or K of 0: C = beta C (an empty sum is 0), C not read when beta is 0, as BLAS does.
template <class TC, class Put>
void scale_only(int64_t M, int64_t N, float beta, TC* C, int64_t ldc, Put put) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) put(C[i * ldc + j], beta);
}

}  // namespace

bool gemm_bf16_native() {
  static const bool native = detect();
  const int f = g_force.load(std::memory_order_relaxed);
  return f < 0 ? native : f == 0 && native;
}

const char* gemm_bf16_kernel() { return gemm_bf16_native() ? "avx512bf16" : "f32-sgemm"; }

bool gemm_bf16_force_fallback(bool on) {
  const int prev = g_force.exchange(on ? 1 : 0);
  return prev == 1;
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_only(M, N, beta, C, ldc, [](float& c, float b) { c = b == 0.0f ? 0.0f : b * c; });
    return;
  }
  if (!gemm_bf16_native()) return fallback(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  native(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, bf16_t* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_only(M, N, beta, C, ldc,
               [](bf16_t& c, float b) { c = float_to_bf16(b == 0.0f ? 0.0f : b * bf16_to_float(c)); });
    return;
  }
  // One K block: the kernel rounds its f32 result straight into C. Longer K: the f32 product in a buffer (the K
  // blocks add up there), rounded after — the same numbers.
  if (gemm_bf16_native() && K <= kKC) return native(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  Tensor hold;
  float* t = scratch<float>(hold, M * N);
  if (beta != 0.0f) widen(C, M, N, ldc, t);
  gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, t, N);
  parallel_range(M, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = float_to_bf16(t[i * N + j]);
  }, std::max<int64_t>(1, kParallelGrain / N));
}

}  // namespace liandan::cpu
