#pragma once
// Rotary position embedding (RoPE, Su et al. 2021) as core ops.
//
// rope(x, cos, sin, pairing) rotates pairs of the last dim of x by angles whose cos/sin are given:
//   y_a = x_a cos - x_b sin,   y_b = x_a sin + x_b cos
// x: [..., D]; cos, sin: [..., P] broadcastable against x's leading dims, with 2P <= D. The first
// 2P dims are rotated, the rest pass through (partial rotary). Pairs are
//   interleaved (RoFormer, default): (x_{2i}, x_{2i+1}), i < P
//   half (GPT-NeoX / LLaMA "rotate_half"): (x_i, x_{i+P}), i < P
// The backward of a rotation is the inverse rotation (sin -> -sin); cos/sin get gradients too when
// they require grad (learned-frequency RoPE), so the tables can come from a differentiable angle.
//
// Tables: rope_angles_1d builds angle[t, i] = pos_t * theta_i, theta_i = base^(-2i/d), computed in
// f64 from the positions directly (never accumulated), so position 8191 is as exact as position 1.
// rope_angles_2d builds the 2-D table of article 2 / RoPE-Axial: the first d/4 pairs (dims [0, d/2)
// with interleaved pairing) rotate by x * f_j, the last d/4 pairs by y * f_j, f_j = base^(-4j/d):
// each half is a standard (d/2)-dim 1-D RoPE.
#include "core/tensor.h"

namespace liandan {

enum class RopePairing { interleaved, half };

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, RopePairing pairing = RopePairing::interleaved);

// theta_i = base^(-2i/d), i < d/2 (f64).
Tensor rope_frequencies(int64_t d, double base = 10000.0);
// [T, d/2] angles (f64) for positions (any float or i64 1-D tensor), e.g. arange(offset, offset + T).
Tensor rope_angles_1d(const Tensor& positions, int64_t d, double base = 10000.0);
// [N, d/2] angles (f64) for N points with coordinates px, py (1-D tensors of length N); d % 4 == 0.
Tensor rope_angles_2d(const Tensor& px, const Tensor& py, int64_t d, double base = 10000.0);
// Convenience: angles -> (cos, sin) in `opt`'s dtype, on its device (tables are computed on the host in f64).
std::pair<Tensor, Tensor> rope_cos_sin(const Tensor& angles, TensorOptions opt);

}  // namespace liandan
