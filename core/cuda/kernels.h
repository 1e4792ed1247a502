#pragma once
// The CUDA kernels behind CudaBackend (core/cuda/backend.cu), one file per family:
// elementwise.cu, reduce.cu, matmul.cu, softmax.cu, norm.cu, conv.cu, rope.cu, attention.cu, random.cu,
// and mma_check.cu (the tensor-core instruction wrappers of mma.cuh against their documented layouts). Arguments as in DeviceBackend (core/device.h).
#include <cublas_v2.h>

#include "core/device.h"

namespace liandan::cuda_impl {

// mma_check.cu
std::string check_tensor_core_layouts(cudaStream_t stream);

// elementwise.cu (its unary, binary, where, foreach_axpby and bias_act kernels fill core/ops/elementwise_kernels.h's
// registry slots)
void copy_strided(const Tensor& dst, const Tensor& src, const Shape& src_strides);
void fill(const Tensor& dst, double value);

// reduce.cu
void sum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& out);
void extreme_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& vals, const Tensor& idx,
                 bool is_max);
void cumsum_run(const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& y, bool reverse);
void sum_squares(const std::vector<Tensor>& xs, const Tensor& out);

// index.cu
void gather_scatter(bool gather, const Tensor& idx, const Tensor& src, const Tensor& dst, int64_t dim);
void index_select(const Tensor& x, const Tensor& idx, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
void index_add_rows(const Tensor& g, const Tensor& order, const Tensor& starts, const Tensor& rows, int64_t outer,
                    int64_t n, int64_t inner, const Tensor& dx);

// matmul.cu
void gemm_batched(cublasHandle_t h, DType dt, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                  const void* A, int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, void* C,
                  int64_t ldc, int64_t stride_c, int64_t batch, bool half_result);

// softmax.cu
void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log);
void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& dx, int64_t outer, int64_t n, int64_t inner,
                      bool log);

// norm.cu
void norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                  const Tensor& rstd, int64_t rows, int64_t len, bool center, double eps);
void norm_backward(const Tensor& x, const Tensor& w, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                   const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t rows, int64_t len, bool center);
void group_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, const Tensor& mean,
                        const Tensor& rstd, int64_t N, int64_t C, int64_t G, int64_t S, double eps, bool silu);
void group_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dx, const Tensor& dw, const Tensor& db, int64_t N, int64_t C,
                         int64_t G, int64_t S, bool silu);

// conv.cu
void im2col(const Tensor& x, const Tensor& col, const ConvShape& s);
void col2im(const Tensor& col, const Tensor& dx, const ConvShape& s);
bool conv_implicit(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const ConvShape& s,
                   bool adjoint);
bool conv_implicit_weight_grad(const Tensor& dy, const Tensor& x, const Tensor& part, const ConvShape& s, DType half);

// rope.cu
void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& y, const Shape& lead,
          const Shape& table_strides, bool half, double sign);

// attention.cu
bool attention_forward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                       const Tensor& out, const Tensor& lse);
bool attention_backward(const AttentionShape& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid,
                        const Tensor& out, const Tensor& lse, const Tensor& g, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv);

// random.cu
void fill_uniform(const Tensor& out, double lo, double hi, uint64_t seed, uint64_t first);
void fill_normal(const Tensor& out, double mean, double std, uint64_t seed, uint64_t first);

}  // namespace liandan::cuda_impl
