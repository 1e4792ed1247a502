#pragma once
// The one place liandan calls BLAS GEMM: row-major C = alpha op(A) op(B) + beta C for f32/f64.
//
//   gemm            one BLAS call; OpenBLAS threads it over the pool when called outside a parallel region.
//                   Fastest for one big product (matmul), but its bits can depend on the thread count: how
//                   OpenBLAS splits C over threads changes the rounding (its Haswell/Zen kernels compute edge
//                   tiles with other instructions, and its threaded driver blocks K differently for long K).
//   gemm_columns    the same product in fixed blocks of C's columns, each one single-threaded BLAS call, the
//                   blocks spread over the pool. The blocks depend only on the shape, so the result is
//                   bit-identical for any thread count and any BLAS kernel; inside a parallel region (a
//                   caller's own split of the work) the same blocks run one after the other. conv2d and the
//                   CPU attention use it: their results must not depend on the thread count.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/cpu/loops.h"

namespace liandan::cpu {

template <class T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  auto fa = ta ? CblasTrans : CblasNoTrans, fb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, fa, fb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, fa, fb, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// One BLAS call on the calling thread only. Inside an active parallel region OpenBLAS (OpenMP build) is
// single-threaded already; outside one it uses omp_get_max_threads() of the calling thread, which this sets to
// 1 for the call (a per-thread setting: other threads are not affected).
template <class T>
void gemm_single_thread(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                        const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads > 1) omp_set_num_threads(1);
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (threads > 1) omp_set_num_threads(threads);
}

// Columns of C per block of gemm_columns: a multiple of every BLAS kernel's column unroll, and wide enough that
// re-packing op(A) for each block costs little next to the block's multiply-adds.
constexpr int64_t kGemmColumnBlock = 256;

template <class T>
void gemm_columns(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T beta, T* C, int64_t ldc) {
  const int64_t blocks = std::max<int64_t>(1, (N + kGemmColumnBlock - 1) / kGemmColumnBlock);
  // A block's multiply-adds; below ~2^18 per thread a parallel region costs more than it saves.
  const int64_t work = M * std::min(N, kGemmColumnBlock) * K;
  parallel_range(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j = b * kGemmColumnBlock, n = std::min(kGemmColumnBlock, N - j);
      gemm_single_thread(ta, tb, M, n, K, alpha, A, lda, tb ? B + j * ldb : B + j, ldb, beta, C + j, ldc);
    }
  }, std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, work)));
}

}  // namespace liandan::cpu
