#pragma once
// Composite forms of fused ops: the same math written with primitive ops only (elementwise, sum, matmul,
// softmax, views, cat), so it runs on any device that has those kernels and gets its gradient from autograd.
// An op whose input is on a device without its fused kernel calls its composite here (tinygrad's way: the
// fused kernel is the optimisation, the composite the definition). tests/test_composite.cpp checks each one
// against the fused CPU kernel, values and gradients, in f64.
#include "core/ops/attention.h"
#include "core/tensor.h"

namespace liandan::composite {

// Normalization over the last `k` dims (layer_norm: mean and biased variance; rms_norm: mean square).
Tensor layer_norm(const Tensor& x, int64_t k, const Tensor& weight, const Tensor& bias, double eps);
Tensor rms_norm(const Tensor& x, int64_t k, const Tensor& weight, double eps);
// x: [N, C, *]; statistics per (sample, group of C/G channels); weight, bias: [C].
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps);
// RoPE as in core/ops/rope.h (first 2P dims rotated, the rest passed through).
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, RopePairing pairing);
// softmax(scale q kᵀ + mask) v with the fused op's masking rules (rows with no visible key give 0).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt);
// Causal linear attention on prepared features: Σ_{j≤i} (rq_i·rk_j) v_j / Σ_{j≤i} fq_i·fk_j, through the masked
// T × T matrices (quadratic, unlike the fused kernel's running sums).
Tensor causal_linear_attention(const Tensor& rq, const Tensor& rk, const Tensor& fq, const Tensor& fk, const Tensor& v);
// conv2d by im2col: unfold's columns (in the GEMM's format under autocast), one batched GEMM per group;
// avg_pool2d (count_include_pad) as a sum of k² strided views; nearest upsampling by expand.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding);
Tensor upsample_nearest2d(const Tensor& x, int64_t scale);
// one_hot(idx, n)[..., c] = (idx[...] == c), in `opt`'s dtype and device; idx i64 on any device.
Tensor one_hot(const Tensor& idx, int64_t n, TensorOptions opt);
// index_select and gather through one-hot matrix products (exact: one term is 1, the others 0).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);  // index: x's shape except at `dim`
// x + the src entries summed into the positions index names along dim (index: x's shape except at `dim`).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

}  // namespace liandan::composite
