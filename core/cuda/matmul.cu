// GEMM on CUDA through cuBLAS. liandan is row-major and cuBLAS column-major: a row-major matrix read
// column-major is its transpose, so C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e. cuBLAS gets
// (B, A) swapped with m = N, n = M, and each operand keeps its own transpose flag.
#include "core/cuda/common.cuh"
#include "core/cuda/kernels.h"

namespace liandan::cuda_impl {

static const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "unknown status";
  }
}

void gemm_batched(cublasHandle_t h, DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                  const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C,
                  int64_t ldc, int64_t stride_c, int64_t batch, bool half_result) {
  LD_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && batch <= INT32_MAX,
           "matmul on CUDA: a dimension exceeds cuBLAS's 32-bit sizes (M ", M, ", N ", N, ", K ", K, ")");
  cublasOperation_t opa = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's first operand is our B
  cublasOperation_t opb = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t st;
  if (dt == DType::f64) {
    const double one = 1, zero = 0;
    st = cublasGemmStridedBatchedEx(h, opa, opb, int(N), int(M), int(K), &one, B, CUDA_R_64F, int(ldb), stride_b,
                                    A, CUDA_R_64F, int(lda), stride_a, &zero, C, CUDA_R_64F, int(ldc), stride_c,
                                    int(batch), CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT);
  } else if (is_half(dt)) {  // autocast: bf16/f16 operands on tensor cores, f32 accumulation; f32 or half result
    const float one = 1, zero = 0;
    cudaDataType_t in = dt == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
    st = cublasGemmStridedBatchedEx(h, opa, opb, int(N), int(M), int(K), &one, B, in, int(ldb), stride_b, A, in,
                                    int(lda), stride_a, &zero, C, half_result ? in : CUDA_R_32F, int(ldc), stride_c,
                                    int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  } else {
    LD_CHECK(dt == DType::f32, "matmul on CUDA: expected f32, f64, bf16 or f16, got ", dtype_name(dt));
    const float one = 1, zero = 0;
    cublasComputeType_t ct = cuda::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    st = cublasGemmStridedBatchedEx(h, opa, opb, int(N), int(M), int(K), &one, B, CUDA_R_32F, int(ldb), stride_b,
                                    A, CUDA_R_32F, int(lda), stride_a, &zero, C, CUDA_R_32F, int(ldc), stride_c,
                                    int(batch), ct, CUBLAS_GEMM_DEFAULT);
  }
  LD_CHECK(st == CUBLAS_STATUS_SUCCESS, "matmul on CUDA: cuBLAS GEMM failed (", cublas_status_name(st), ") for M ",
           M, ", N ", N, ", K ", K, ", batch ", batch);
}

}  // namespace liandan::cuda_impl
