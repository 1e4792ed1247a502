#pragma once
// Stands in for CUDA's <mma.h> (WMMA) in the emulated kernel builds. A fragment's element layout across a
// warp's lanes is unspecified in CUDA, so kernels may only load, store, fill and multiply fragments as wholes;
// here every lane holds the whole tile (loads read it all, mma computes it all, stores write it all — the same
// values from every lane), which is exact for such kernels. A load is warp-collective: the lanes meet after it,
// so no lane's later store can reach a lane that has not loaded yet (lanes run one after another here).
// Accumulation in float; products of bf16/f16 are exact.
#include "../emu.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class T> inline float to_f(T v) { return float(v); }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float to_f(__half v) { return __half2float(v); }

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  float x[rows * cols];  // the whole tile, row-major
};

template <class Use, int M, int N, int K, class T, class Layout, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ld) {
  using F = fragment<Use, M, N, K, T, Layout>;
  constexpr bool col = std::is_same_v<Layout, col_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = to_f(col ? p[r + c * ld] : p[r * ld + c]);
  ::emu::warp_sync();
}

template <int M, int N, int K, class P>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const P* p, unsigned ld, layout_t l) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = float(l == mem_col_major ? p[r + c * ld] : p[r * ld + c]);
  ::emu::warp_sync();
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ld, layout_t l) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (l == mem_col_major ? p[r + c * ld] : p[r * ld + c]) = f.x[r * N + c];
}

template <class F, class V>
void fill_fragment(F& f, V v) {
  for (float& e : f.x) e = float(v);
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = acc;
    }
  for (int e = 0; e < M * N; ++e) d.x[e] = out[e];
}

}  // namespace nvcuda::wmma
