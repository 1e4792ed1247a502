#pragma once
// Attention as core ops.
//
// scaled_dot_product_attention: softmax(scale * q k^T + mask) v, fused. q: [B, H, Tq, D],
// k: [B, H, Tk, D], v: [B, H, Tk, Dv] (any leading dims, broadcast-free: they must match). One
// (batch, head) per thread at a time, so at most one Tq x Tk score matrix per thread exists; the
// backward recomputes the scores from the saved row log-sum-exps instead of storing probabilities.
//   causal:    query i (at absolute position Tk - Tq + i, so a KV cache works) sees keys j <= that
//   key_valid: optional [B, Tk] tensor, non-zero = the key may be attended (padding mask)
//   rope_cos, rope_sin: optional RoPE inside the op (RoFormer: q and k rotated, v not): [Tk, P] tables as for
//              `rope` (2P <= D), key j at table row j, query i at row Tk - Tq + i (its causal position). The result
//              is attention(rope(q, cos[Tk-Tq:], sin[Tk-Tq:]), rope(k, cos, sin), v); on a device the fused kernels
//              rotate the Q and K tiles as they stage them and rotate dQ, dK back as they store them (no rotated
//              copies of q, k in memory, none saved for the backward). Tables that need gradients, and the CPU,
//              take that composite form.
// A query row with no visible key outputs 0 (and passes no gradient), instead of NaN.
// Layouts: 4-D q, k, v with a contiguous last dim are read in place (e.g. strided heads of a fused QKV
// projection); the output of 4-D inputs is laid out [B, T, H, Dv] (returned as its [B, H, T, Dv] permutation),
// so merging the heads back is a view. Half (bf16/f16) q, k, v: the tensor-core kernel on a device, the autocast
// composite on the CPU; the output is in their format.
//
// linear_attention (RoFormer 3.3, eq. 19): phi(x) = elu(x) + 1 on q and k;
//   out_i = sum_j [R_i phi(q_i)]^T [R_j phi(k_j)] v_j / sum_j phi(q_i)^T phi(k_j)
// RoPE (cos/sin tables as for `rope`, undefined tensors = no RoPE) in the numerator only; the
// denominator stays unrotated and positive. Non-causal in O(T D Dv) through K^T V; causal with
// running sums in a fused kernel (no T x T matrix, no T x D x Dv tensor).
#include "core/ops/rope.h"
#include "core/tensor.h"

namespace liandan {

struct AttentionOptions {
  bool causal = false;
  Tensor key_valid;       // [B, Tk] or undefined
  double scale = 0.0;     // 0: 1 / sqrt(D)
  Tensor rope_cos, rope_sin;  // [Tk, P] or undefined
  RopePairing rope_pairing = RopePairing::interleaved;
};

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& opt = {});

Tensor linear_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, const Tensor& cos = {},
                        const Tensor& sin = {}, RopePairing pairing = RopePairing::interleaved);

// The fused causal kernel on prepared features (exposed for tests): rq, rk: rotated features
// [.., T, D]; fq, fk: unrotated features [.., T, D]; v: [.., T, Dv].
Tensor causal_linear_attention_core(const Tensor& rq, const Tensor& rk, const Tensor& fq, const Tensor& fk,
                                    const Tensor& v);

}  // namespace liandan
