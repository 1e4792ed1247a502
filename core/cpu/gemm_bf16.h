#pragma once
// bf16 GEMM on the CPU: row-major C = alpha op(A) op(B) + beta C with bf16 operands, f32 accumulation, and an f32
// or a bf16 result (the f32 value rounded once, to nearest even).
//
// On a CPU with AVX512-BF16 (vdpbf16ps: 16 lanes, each adding the two products of a pair of bf16 values to an
// f32 sum — twice the f32 FMA rate) the operands are packed in pairs along K: op(A) into panels of kMR rows, op(B)
// into panels of kNR columns, both in blocks of kKC values of K, so that the micro-kernel's loads are one
// broadcast 32-bit pair of A per row and one 64-byte vector of B per 16 columns. C is cut into tiles of at most
// kMC x kNC whose grid depends only on the shape; the tiles are spread over the thread pool, and every element of
// C is summed in the same order (K in kKC blocks, pairs in order) whichever thread computes its tile, so the
// result is bit-identical on any thread count. Like every vdpbf16ps code (oneDNN's included), the kernel flushes
// subnormal operands and results to zero.
//
// Elsewhere (no AVX512-BF16, or LIANDAN_CPU_BF16=0 in the environment, which emulates such a CPU so that this
// path is tested too) the operands are widened to f32 — exactly — and multiplied by single-threaded sgemms on fixed
// 256 x 256 blocks of C spread over the pool (bit-identical on any thread count as well). Both paths are within the
// f32 accumulation bound of the exact product of the bf16 operands: |C - C_exact| <= (K + 4) 2^-24 (|alpha| sum_k
// |a_k b_k| + |beta C|) (tests/test_gemm_bf16.cpp).
#include <cstdint>

#include "core/half.h"

namespace liandan::cpu {

using bf16_t = uint16_t;  // a bfloat16's bits (the storage of liandan::bfloat16)

// Whether gemm_bf16 runs the AVX512-BF16 kernel (CPU feature, unless LIANDAN_CPU_BF16=0). Read once.
bool gemm_bf16_native();
// "avx512bf16" or "f32-sgemm" (for logs and benchmarks).
const char* gemm_bf16_kernel();

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The same product rounded to bf16 (beta C read as its f32 widening).
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, bf16_t* C, int64_t ldc);

// Test hook: forces the fallback (true) or the detected path (false) for this process; returns the previous setting.
bool gemm_bf16_force_fallback(bool on);

}  // namespace liandan::cpu
