#pragma once
// Multi-head attention with a pluggable position encoding and a KV cache for generation.
//
//   nn::AttentionConfig cfg;  cfg.position = nn::PositionEncoding::rope1d;  cfg.causal = true;
//   nn::MultiheadAttention attn(256, 4, cfg, gen);
//   Tensor y = attn.forward(x);                         // x: [B, T, C] -> [B, T, C], positions 0..T-1
//
// Position encodings:
//   none         no position information
//   sinusoidal   additive (Vaswani et al.): the MODEL adds sinusoidal_position_encoding() to the token
//   learned      embeddings (resp. a learned table) before the blocks; inside attention both act as `none`
//   rope1d       RoPE on q and k of every head with the 1-D positions (default 0..T-1, or cache offset + t)
//   rope2d       2-D RoPE (article 2): each head's first Dh/2 dims rotate with x, the last Dh/2 with y;
//                the caller gives the coordinates (AttentionInputs::pos_x / pos_y) or ready tables
// Kinds:
//   softmax      fused scaled_dot_product_attention, scale 1/sqrt(Dh), causal / key padding masks
//   linear       RoFormer linear attention (eq. 19): phi = elu + 1, RoPE in the numerator only
//
// KV cache: forward with AttentionInputs::cache appends this call's keys and values (keys already rotated
// with their absolute positions, so cached keys are never rotated again) and attends over everything
// cached; the positions of the new tokens start at the cached length. With causal attention, feeding a
// sequence token by token through the cache gives the same outputs as one full forward.
//
// Dropout: the fused softmax kernel has no probability dropout, so `dropout` is applied to the attention
// output (before the output projection) in training mode.
#include <memory>
#include <vector>

#include "core/ops.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace liandan::nn {

enum class AttentionKind { softmax, linear };
enum class PositionEncoding { none, sinusoidal, learned, rope1d, rope2d };

struct AttentionConfig {
  AttentionKind kind = AttentionKind::softmax;
  PositionEncoding position = PositionEncoding::rope1d;
  double rope_base = 10000.0;
  RopePairing pairing = RopePairing::interleaved;
  bool causal = false;
  bool bias = true;       // biases of the q, k, v, o projections
  double dropout = 0.0;   // on the attention output, training mode only
};

// Keys (rotated) and values of the tokens seen so far, [B, H, T, Dh] each; empty before the first step.
// Linear attention caches its features instead: k = R phi(k) (numerator), kf = phi(k) (denominator).
struct KVCache {
  Tensor k, v, kf;
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
  void clear() { k = Tensor(); v = Tensor(); kf = Tensor(); }
};

// Optional inputs of MultiheadAttention::forward.
struct AttentionInputs {
  Tensor key_valid;    // [B, Tk] non-zero = key may be attended (with a cache, Tk = cached + new)
  Tensor positions;    // rope1d: [T] positions of the new tokens (default: cache length + 0..T-1)
  Tensor pos_x, pos_y; // rope2d: [T] coordinates of the tokens
  Tensor cos, sin;     // ready RoPE tables [T, Dh/2] (override positions; models compute them once)
  KVCache* cache = nullptr;
  Tensor residual;     // [B, T, d]: forward returns residual + attention (the add fused into o_proj's pass)
};

// [T, d] sinusoidal table (Vaswani et al.): pe[t, 2i] = sin(t w_i), pe[t, 2i+1] = cos(t w_i),
// w_i = base^(-2i/d), for positions offset .. offset + T - 1.
Tensor sinusoidal_position_encoding(int64_t T, int64_t d, int64_t offset = 0, double base = 10000.0,
                                    DType dtype = DType::f32);

// RoPE tables (cos, sin), each [T, Dh/2] in `dtype`, for 1-D positions / 2-D coordinates.
std::pair<Tensor, Tensor> rope_tables_1d(const Tensor& positions, int64_t head_dim, double base, TensorOptions opt);
std::pair<Tensor, Tensor> rope_tables_2d(const Tensor& px, const Tensor& py, int64_t head_dim, double base,
                                         TensorOptions opt);

class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t d_model, int64_t n_heads, AttentionConfig cfg = {},
                     Generator& gen = default_generator());
  using Module::forward;
  Tensor forward(const Tensor& x) override { return forward(x, AttentionInputs{}); }
  Tensor forward(const Tensor& x, const AttentionInputs& in);
  // Pre-softmax attention logits scale * (R q)(R k)^T, [B, H, T, T] (no mask, no cache; softmax kind's
  // positions as in forward). For tests and inspection.
  Tensor attention_logits(const Tensor& x, const AttentionInputs& in = {});
  // Whether forward keeps q, k, v in the autocast half format (softmax attention without a KV cache or attention
  // dropout, under autocast); then it also takes x in that format (a norm before it may write it directly).
  bool half_heads(const AttentionInputs& in) const;

  int64_t d_model, n_heads, head_dim;
  AttentionConfig config;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  // q, k, v as [B, H, T, Dh], q and k rotated (softmax) or with tables returned (linear).
  void project(const Tensor& x, const AttentionInputs& in, int64_t offset, Tensor& q, Tensor& k, Tensor& v,
               Tensor& cos, Tensor& sin);
  Generator* gen_;  // dropout draws: the default generator (saved with checkpoints), not the init one
};

}  // namespace liandan::nn
