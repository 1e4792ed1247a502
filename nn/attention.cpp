#include "nn/attention.h"

#include <cmath>

#include "core/error.h"

namespace liandan::nn {

Tensor sinusoidal_position_encoding(int64_t T, int64_t d, int64_t offset, double base, DType dtype) {
  LD_CHECK(d % 2 == 0, "sinusoidal_position_encoding: d must be even, got ", d);
  std::vector<double> pe(size_t(T * d));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      double a = double(offset + t) * std::pow(base, -2.0 * double(i) / double(d));
      pe[size_t(t * d + 2 * i)] = std::sin(a);
      pe[size_t(t * d + 2 * i + 1)] = std::cos(a);
    }
  return from_vector(pe, {T, d}, dtype);
}

std::pair<Tensor, Tensor> rope_tables_1d(const Tensor& positions, int64_t head_dim, double base, TensorOptions opt) {
  return rope_cos_sin(rope_angles_1d(positions, head_dim, base), opt);
}

std::pair<Tensor, Tensor> rope_tables_2d(const Tensor& px, const Tensor& py, int64_t head_dim, double base,
                                         TensorOptions opt) {
  return rope_cos_sin(rope_angles_2d(px, py, head_dim, base), opt);
}

MultiheadAttention::MultiheadAttention(int64_t d_model, int64_t n_heads, AttentionConfig cfg, Generator& gen)
    : Module("MultiheadAttention"), d_model(d_model), n_heads(n_heads), config(cfg), gen_(&default_generator()) {
  LD_CHECK(d_model >= 1, "MultiheadAttention: d_model must be >= 1, got ", d_model);
  LD_CHECK(cfg.dropout >= 0 && cfg.dropout < 1, "MultiheadAttention: dropout must be in [0, 1), got ", cfg.dropout);
  LD_CHECK(n_heads > 0 && d_model % n_heads == 0, "MultiheadAttention: d_model ", d_model,
           " is not divisible by n_heads ", n_heads);
  head_dim = d_model / n_heads;
  if (cfg.position == PositionEncoding::rope1d)
    LD_CHECK(head_dim % 2 == 0, "MultiheadAttention: rope1d needs an even head dim, got ", head_dim);
  if (cfg.position == PositionEncoding::rope2d)
    LD_CHECK(head_dim % 4 == 0, "MultiheadAttention: rope2d needs a head dim divisible by 4, got ", head_dim);
  q_proj = register_module("q_proj", std::make_shared<Linear>(d_model, d_model, cfg.bias, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(d_model, d_model, cfg.bias, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d_model, d_model, cfg.bias, gen));
  o_proj = register_module("o_proj", std::make_shared<Linear>(d_model, d_model, cfg.bias, gen));
}

bool MultiheadAttention::half_heads(const AttentionInputs& in) const {
  return autocast_enabled() && config.kind == AttentionKind::softmax && !in.cache &&
         !(config.dropout > 0 && is_training());
}

void MultiheadAttention::project(const Tensor& x, const AttentionInputs& in, int64_t offset, Tensor& q, Tensor& k,
                                 Tensor& v, Tensor& cos, Tensor& sin) {
  LD_CHECK(x.dim() == 3 && x.size(2) == d_model, "MultiheadAttention: expected x [B, T, ", d_model, "], got ",
           shape_str(x.shape()));
  const int64_t B = x.size(0), T = x.size(1);
  // q, k, v in one GEMM: x [B*T, C] @ [C, 3C] (the three weights concatenated; the copy is 3 C^2 floats).
  Tensor w = cat({q_proj->weight, k_proj->weight, v_proj->weight}, 0);
  Tensor b = config.bias ? cat({q_proj->bias, k_proj->bias, v_proj->bias}, 0) : Tensor();
  // Under autocast, softmax attention takes q, k, v in the half format straight from the GEMM (bias in the same
  // fused pass), through RoPE and the fused kernel to o_proj: 2-byte activations, as PyTorch's autocast. (Linear
  // attention, a KV cache and dropout keep f32: their composite ops have no half kernels.)
  Tensor qkv;
  if (half_heads(in)) {
    qkv = autocast_matmul(x, w.t());
    if (b.defined()) qkv = bias_act(qkv, b, BiasActivation::none);
  } else {
    qkv = matmul(x, w.t());
    if (b.defined()) qkv = add(qkv, b);
  }
  // q, k, v: [B, H, T, Dh] views of qkv (the attention kernels read them in place); unbind gives the three one
  // autograd node, so their gradients come back as one [B, T, 3, H, Dh] stack.
  std::vector<Tensor> parts = unbind(qkv.view({B, T, 3, n_heads, head_dim}), 2);
  q = parts[0].permute({0, 2, 1, 3});
  k = parts[1].permute({0, 2, 1, 3});
  v = parts[2].permute({0, 2, 1, 3});
  cos = in.cos;
  sin = in.sin;
  const DType table_dtype = is_half(x.dtype()) ? DType::f32 : x.dtype();  // RoPE rotates half rows by f32 tables
  if (!cos.defined()) {
    if (config.position == PositionEncoding::rope1d) {
      Tensor pos = in.positions.defined() ? in.positions : arange(double(offset), double(offset + T), 1.0, DType::f64);
      std::tie(cos, sin) = rope_tables_1d(pos, head_dim, config.rope_base, {table_dtype, x.device()});
    } else if (config.position == PositionEncoding::rope2d) {
      LD_CHECK(in.pos_x.defined() && in.pos_y.defined(),
               "MultiheadAttention: rope2d needs pos_x and pos_y (or cos/sin tables)");
      std::tie(cos, sin) = rope_tables_2d(in.pos_x, in.pos_y, head_dim, config.rope_base, {table_dtype, x.device()});
    }
  }
  if (cos.defined() && cos.device() != x.device()) {  // a caller's tables on another device (ours are built on x's)
    cos = cos.to(x.device());
    sin = sin.to(x.device());
  }
}

namespace {
// Cat along the time dim (2) of [B, H, T, D] tensors.
Tensor append(const Tensor& cached, const Tensor& t) { return cached.defined() ? cat({cached, t}, 2) : t; }
}  // namespace

Tensor MultiheadAttention::forward(const Tensor& x, const AttentionInputs& in) {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t offset = in.cache ? in.cache->length() : 0;
  Tensor q, k, v, cos, sin;
  project(x, in, offset, q, k, v, cos, sin);
  Tensor out;  // [B, H, T, Dh]
  if (config.kind == AttentionKind::softmax) {
    AttentionOptions opt;
    opt.causal = config.causal;
    opt.key_valid = in.key_valid;
    if (in.cache) {  // the cache holds rotated keys: RoPE here, at the new tokens' positions
      if (cos.defined()) {
        q = rope(q, cos, sin, config.pairing);
        k = rope(k, cos, sin, config.pairing);
      }
      in.cache->k = k = append(in.cache->k, k);
      in.cache->v = v = append(in.cache->v, v);
    } else if (cos.defined()) {  // RoPE inside the attention op (fused into the kernels on a device)
      opt.rope_cos = cos;
      opt.rope_sin = sin;
      opt.rope_pairing = config.pairing;
    }
    out = scaled_dot_product_attention(q, k, v, opt);
  } else if (!in.cache && !in.key_valid.defined()) {
    out = linear_attention(q, k, v, config.causal, cos, sin, config.pairing);
  } else {
    // Explicit form over the cached keys: out_i = sum_j m_ij (R phi q_i . R phi k_j) v_j / sum_j m_ij phi q_i . phi k_j
    Tensor fq = elu(q) + 1.0, fk = elu(k) + 1.0;
    Tensor rq = cos.defined() ? rope(fq, cos, sin, config.pairing) : fq;
    Tensor rk = cos.defined() ? rope(fk, cos, sin, config.pairing) : fk;
    if (in.cache) {
      in.cache->k = rk = append(in.cache->k, rk);
      in.cache->kf = fk = append(in.cache->kf, fk);
      in.cache->v = v = append(in.cache->v, v);
    }
    const int64_t Tk = rk.size(2);
    Tensor num = matmul(rq, rk.transpose(-2, -1)), den = matmul(fq, fk.transpose(-2, -1));  // [B, H, T, Tk]
    Tensor mask;
    if (config.causal) {
      std::vector<double> m(size_t(T * Tk), 0.0);
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j <= std::min(Tk - 1, Tk - T + i); ++j) m[size_t(i * Tk + j)] = 1.0;
      mask = from_vector(m, {T, Tk}, {x.dtype(), x.device()});
    }
    if (in.key_valid.defined()) {
      Tensor kv = ne(in.key_valid.to(x.device()).to(x.dtype()), zeros({1}, {x.dtype(), x.device()})).view({B, 1, 1, Tk});
      mask = mask.defined() ? mul(mask, kv) : kv;
    }
    if (mask.defined()) {
      num = num * mask;
      den = den * mask;
    }
    out = matmul(num, v) / sum(den, {-1}, true);
  }
  out = out.permute({0, 2, 1, 3}).reshape({B, T, d_model});
  if (config.dropout > 0) out = dropout(out, config.dropout, is_training(), *gen_);
  return in.residual.defined() ? o_proj->forward_act(out, BiasActivation::none, in.residual) : o_proj->forward(out);
}

Tensor MultiheadAttention::attention_logits(const Tensor& x, const AttentionInputs& in) {
  Tensor q, k, v, cos, sin;
  project(x, in, 0, q, k, v, cos, sin);
  if (config.kind == AttentionKind::linear) {
    q = elu(q) + 1.0;
    k = elu(k) + 1.0;
  }
  if (cos.defined()) {
    q = rope(q, cos, sin, config.pairing);
    k = rope(k, cos, sin, config.pairing);
  }
  if (config.kind == AttentionKind::linear) return matmul(q, k.transpose(-2, -1));
  return matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(head_dim)));
}

}  // namespace liandan::nn
