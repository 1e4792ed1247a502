#pragma once
// Every differentiable op of the core. One function per op; the implementation (forward kernel
// and backward, side by side) lives in core/ops/<family>.cpp:
//   elementwise.cpp  unary/binary math, comparisons, where, dropout
//   reduce.cpp       sum, mean, var, max/min, logsumexp, cumsum
//   matmul.cpp       matmul (OpenBLAS)
//   softmax.cpp      softmax, log_softmax
//   norm.cpp         layer_norm, rms_norm, group_norm (+ fused SiLU)
//   index.cpp        embedding, index_select, gather, scatter_add
//   shape.cpp        cat, stack, split, unbind, pad, and the autograd of views
//   conv.cpp         conv2d, unfold, avg_pool2d, upsample_nearest2d
//   rope.cpp         rotary position embedding, 1-D and 2-D tables (declared in core/ops/rope.h)
//   attention.cpp    fused softmax attention, linear attention (declared in core/ops/attention.h)
#include <optional>
#include <utility>
#include <vector>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops/attention.h"
#include "core/ops/rope.h"
#include "core/random.h"
#include "core/tensor.h"

namespace liandan {

// ---------------------------------------------------------------- elementwise (broadcasting)
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);  // a^b, a > 0 where b is not an integer
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor pow(const Tensor& a, double e);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor rdiv(const Tensor& a, double s);  // s / a

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor log1p(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
Tensor square(const Tensor& x);
Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
enum class GeluApprox { none, tanh };  // none = exact erf form
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::none);
Tensor silu(const Tensor& x);
Tensor elu(const Tensor& x, double alpha = 1.0);
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);
Tensor softsign(const Tensor& x);  // x / (1 + |x|)

// y = act(h + bias) in one pass, computed in f32 (f64 for f64) and stored in h's dtype: h [.., N], bias [N] in
// h's dtype or f32 when h is bf16/f16 (undefined: none). With a residual (h's shape, the bias's dtype), y =
// residual + act(h + bias) in the residual's dtype: a residual block's add in the same pass. The backward is
// one pass too: dh = g·act'(h + bias) in h's dtype, dbias = Σ over rows (deterministic: fixed row chunks summed
// in order), dresidual = g. A Linear layer's bias, activation and residual add after its GEMM; nn's blocks use
// it under autocast on the GEMM's half output (Linear::forward_act).
enum class BiasActivation { none, gelu, gelu_tanh };
Tensor bias_act(const Tensor& h, const Tensor& bias, BiasActivation act, const Tensor& residual = {});

// Comparisons return 0/1 in the inputs' dtype and carry no gradient.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, double s);
Tensor lt(const Tensor& a, double s);
// where(cond != 0, a, b), broadcasting all three.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !train.
Tensor dropout(const Tensor& x, double p, bool train, Generator& gen = default_generator());

// ---------------------------------------------------------------- reductions
// `dims` empty means all dims.
Tensor sum(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const Shape& dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, const Shape& dims = {}, int64_t correction = 1, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const Shape& dims, bool keepdim = false);
Tensor max(const Tensor& x);  // over all elements
Tensor min(const Tensor& x);
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);  // values, i64 indices
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor cumsum(const Tensor& x, int64_t dim);
// Sums `x` down to `shape` (the reverse of broadcasting); used by broadcasting backward passes.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---------------------------------------------------------------- matmul
// torch.matmul semantics: 1-D operands are promoted, batch dims broadcast.
Tensor matmul(const Tensor& a, const Tensor& b);
// matmul as PyTorch's autocast computes it: under autocast (core/autocast.h) the product comes back in the half
// format (the GEMM's epilogue rounds it; no f32 result is written), for consumers that take half inputs — nn's
// feed-forward and attention blocks, whose large activations then move in 2 bytes. Without autocast: matmul.
Tensor autocast_matmul(const Tensor& a, const Tensor& b);

// ---------------------------------------------------------------- softmax family
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// ---------------------------------------------------------------- normalization
// Normalizes over the last `normalized_shape.size()` dims. weight/bias may be undefined.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                double eps = 1e-6);
// The same with y in `out`: x's dtype, or bf16/f16 from an f32 x — under autocast, the half operand of the GEMM
// that follows (autocast_operand_dtype), rounded once by the norm's own pass instead of an f32 y and a cast; its
// gradient then arrives in that format and is read as it is.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps, DType out);
Tensor rms_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, double eps, DType out);
// x: [N, C, *]; weight, bias: [C] or undefined.
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  double eps = 1e-5);
// silu(group_norm(x, ...)) fused: one pass each way, z = group_norm(x) is recomputed, never stored.
Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                       double eps = 1e-5);
// The same with y in `out` (bf16/f16 from an f32 x: the GEMM operand of a convolution after it, as layer_norm's).
Tensor group_norm_silu(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps,
                       DType out);

// ---------------------------------------------------------------- indexing (indices are i64)
Tensor embedding(const Tensor& weight, const Tensor& indices);  // out: indices.shape + [D]
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// Returns a copy of x with src added at index along dim (torch.Tensor.scatter_add).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

// ---------------------------------------------------------------- shape
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> unbind(const Tensor& x, int64_t dim);  // the slices along dim (views), dim removed
// F.pad: `pads` = (left, right) pairs starting from the last dim; constant value.
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value = 0.0);

// ---------------------------------------------------------------- convolution and pooling
// x: [N, C, H, W]; weight: [O, C/groups, kh, kw]; bias: [O] or undefined.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride = 1,
              int64_t padding = 0, int64_t groups = 1);
// im2col, as torch.nn.functional.unfold: x [N, C, H, W] -> columns [N, C·kh·kw, Ho·Wo] whose row (c·kh + i)·kw + j,
// column oy·Wo + ox holds x[n, c, oy·stride − padding + i, ox·stride − padding + j] (0 outside the image). `dtype`:
// the columns' format (default x's); a half one rounds once, in the same pass (conv2d under autocast).
Tensor unfold(const Tensor& x, int64_t kh, int64_t kw, int64_t stride = 1, int64_t padding = 0);
Tensor unfold(const Tensor& x, int64_t kh, int64_t kw, int64_t stride, int64_t padding, DType dtype);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride = 0, int64_t padding = 0);
Tensor upsample_nearest2d(const Tensor& x, int64_t scale);

// ---------------------------------------------------------------- operators
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv(a, s); }

// Shape that a and b broadcast to; the error names `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace liandan
