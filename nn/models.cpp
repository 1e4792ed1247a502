#include "nn/models.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/autograd.h"
#include "core/error.h"
#include "nn/init.h"

namespace liandan::nn {

// ---------------------------------------------------------------- block

TransformerBlock::TransformerBlock(int64_t d_model, int64_t n_heads, int64_t d_ff, const AttentionConfig& cfg,
                                   Generator& gen)
    : Module("TransformerBlock") {
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(d_model));
  attn = register_module("attn", std::make_shared<MultiheadAttention>(d_model, n_heads, cfg, gen));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(d_model));
  ffn = register_module("ffn", std::make_shared<FeedForward>(d_model, d_ff, true, GeluApprox::none, gen));
  // Dropout draws from the default generator, not the init generator `gen`: the trainer saves and restores the
  // default generator with every checkpoint (a task-local init generator is gone after construction).
  drop = register_module("drop", std::make_shared<Dropout>(cfg.dropout, default_generator()));
}

Tensor TransformerBlock::forward(const Tensor& x, const AttentionInputs& in) {
  if (drop->p > 0) {  // dropout on the residual branches
    Tensor y = x + drop->forward(attn->forward(ln1->forward(x), in));
    return y + drop->forward(ffn->forward(ln2->forward(y)));
  }
  // The residual adds ride on the output projections' bias pass (fused under autocast), and under autocast the
  // norms write the half operand of the projection after them (no f32 output and cast, nor their gradients).
  AttentionInputs with_residual = in;
  with_residual.residual = x;
  const DType gemm_in = autocast_operand_dtype(x.dtype());
  Tensor y = attn->forward(ln1->forward(x, attn->half_heads(in) ? gemm_in : x.dtype()), with_residual);
  return ffn->forward(ln2->forward(y, gemm_in), y);
}

namespace {

// Sizes beyond these are nonsense (their tensors could not be allocated) and would overflow the products
// the constructors form; refusing them names the field instead of failing inside an allocation.
constexpr int64_t kMaxWidth = int64_t(1) << 24, kMaxLayers = int64_t(1) << 16;

void check_size(const char* who, const char* field, int64_t v, int64_t max = kMaxWidth) {
  LD_CHECK(v >= 1 && v <= max, who, ": ", field, " must be in [1, ", max, "], got ", v);
}

// The checks every transformer model shares: sizes, head split, dropout, RoPE base. (MultiheadAttention
// checks the head dim RoPE needs.)
void check_transformer(const char* who, int64_t d_model, int64_t n_layers, int64_t n_heads, int64_t d_ff,
                       double dropout, PositionEncoding pos, double rope_base) {
  check_size(who, "d_model", d_model);
  check_size(who, "n_layers", n_layers, kMaxLayers);
  check_size(who, "n_heads", n_heads);
  check_size(who, "d_ff", d_ff);
  LD_CHECK(d_model % n_heads == 0, who, ": d_model ", d_model, " is not divisible by n_heads ", n_heads);
  LD_CHECK(dropout >= 0 && dropout < 1, who, ": dropout must be in [0, 1), got ", dropout);
  if (pos == PositionEncoding::rope1d || pos == PositionEncoding::rope2d)
    LD_CHECK(std::isfinite(rope_base) && rope_base > 0, who, ": rope_base must be a finite number > 0, got ", rope_base);
}

// Attention dropout stays 0: the blocks apply dropout to the residual branches instead.
AttentionConfig attention_config(AttentionKind kind, PositionEncoding pos, double base, RopePairing pairing,
                                 bool causal, bool bias = true) {
  AttentionConfig a;
  a.kind = kind;
  a.position = pos;
  a.rope_base = base;
  a.pairing = pairing;
  a.causal = causal;
  a.dropout = 0.0;
  a.bias = bias;
  return a;
}

std::shared_ptr<ModuleList> make_blocks(Module& owner, int64_t n, int64_t d, int64_t h, int64_t ff,
                                        const AttentionConfig& a, double dropout, Generator& gen) {
  auto blocks = owner.register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < n; ++i) {
    auto b = std::make_shared<TransformerBlock>(d, h, ff, a, gen);
    b->drop->p = dropout;
    blocks->push_back(b);
  }
  return blocks;
}

// Adds the additive position encoding (sinusoidal / learned) for positions offset .. offset + T - 1.
Tensor add_positions(const Tensor& x, PositionEncoding pos, const Tensor& table, int64_t offset) {
  const int64_t T = x.size(1), d = x.size(2);
  if (pos == PositionEncoding::sinusoidal)
    return x + sinusoidal_position_encoding(T, d, offset, 10000.0, x.dtype()).to(x.device());
  if (pos == PositionEncoding::learned) {
    LD_CHECK(offset + T <= table.size(0), "learned positions: position ", offset + T - 1, " is past max_len ",
             table.size(0));
    return x + table.narrow(0, offset, T);
  }
  return x;
}

Tensor learned_table(Module& m, int64_t n, int64_t d, Generator& gen) {
  Tensor t = m.register_parameter("pos_embedding", empty({n, d}));
  init::normal_(t, gen, 0.0, 0.02);
  return t;
}

}  // namespace

// ---------------------------------------------------------------- LM

RoFormerLM::RoFormerLM(const RoFormerLMConfig& cfg, Generator& gen) : Module("RoFormerLM"), config(cfg) {
  LD_CHECK(cfg.position != PositionEncoding::rope2d, "RoFormerLM: rope2d is for images (ViT)");
  check_transformer("RoFormerLM", cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.position,
                    cfg.rope_base);
  check_size("RoFormerLM", "vocab_size", cfg.vocab_size);
  check_size("RoFormerLM", "max_len", cfg.max_len);
  tok_embedding = register_module("tok_embedding", std::make_shared<Embedding>(cfg.vocab_size, cfg.d_model, gen));
  init::normal_(tok_embedding->weight, gen, 0.0, 0.02);
  if (cfg.position == PositionEncoding::learned) pos_embedding = learned_table(*this, cfg.max_len, cfg.d_model, gen);
  AttentionConfig a = attention_config(cfg.kind, cfg.position, cfg.rope_base, cfg.pairing, true, cfg.bias);
  blocks = make_blocks(*this, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, a, cfg.dropout, gen);
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(cfg.d_model));
  lm_head = register_module("lm_head", std::make_shared<Linear>(cfg.d_model, cfg.vocab_size, cfg.bias, gen));
}

Tensor RoFormerLM::forward(const Tensor& tokens, std::vector<KVCache>* caches) {
  LD_CHECK(tokens.dim() == 2, "RoFormerLM: expected tokens [B, T], got ", shape_str(tokens.shape()));
  if (caches) LD_CHECK(int64_t(caches->size()) == config.n_layers, "RoFormerLM: need one cache per layer");
  const int64_t T = tokens.size(1);
  const int64_t offset = caches ? (*caches)[0].length() : 0;
  Tensor x = tok_embedding->forward(tokens);
  x = add_positions(x, config.position, pos_embedding, offset);
  AttentionInputs in;
  if (config.position == PositionEncoding::rope1d) {
    const int64_t hd = config.d_model / config.n_heads;
    std::tie(in.cos, in.sin) = rope_tables_1d(arange(double(offset), double(offset + T), 1.0, DType::f64), hd,
                                              config.rope_base, {x.dtype(), x.device()});
  }
  size_t i = 0;
  for (const auto& m : *blocks) {
    in.cache = caches ? &(*caches)[i] : nullptr;
    x = static_cast<TransformerBlock&>(*m).forward(x, in);
    ++i;
  }
  return lm_head->forward(ln_f->forward(x, autocast_operand_dtype(x.dtype())));
}

Tensor RoFormerLM::loss(const Tensor& tokens) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  Tensor logits = forward(tokens.narrow(1, 0, T - 1));
  Tensor target = tokens.narrow(1, 1, T - 1).contiguous().view({B, T - 1, 1});
  return -mean(gather(log_softmax(logits, -1), -1, target));
}

void check_generate_options(const GenerateOptions& opt) {
  LD_CHECK(std::isfinite(opt.temperature) && opt.temperature > 0,
           "GenerateOptions: temperature must be a finite number > 0, got ", opt.temperature);
  LD_CHECK(opt.top_k >= 0, "GenerateOptions: top_k must be >= 0 (0: off), got ", opt.top_k);
  LD_CHECK(opt.top_p > 0 && opt.top_p <= 1, "GenerateOptions: top_p must be in (0, 1], got ", opt.top_p);
}

int64_t sample_token(const std::vector<double>& logits, const GenerateOptions& opt, double u) {
  check_generate_options(opt);
  const int64_t V = int64_t(logits.size());
  LD_CHECK(V >= 1, "sample_token: no logits");
  if (opt.greedy) return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int64_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  int64_t keep = (opt.top_k > 0 && opt.top_k < V) ? opt.top_k : V;
  const double temp = std::max(opt.temperature, 1e-8);
  std::vector<double> p(static_cast<size_t>(keep));
  const double mx = logits[size_t(idx[0])];
  double z = 0;
  for (int64_t i = 0; i < keep; ++i) z += (p[size_t(i)] = std::exp((logits[size_t(idx[size_t(i)])] - mx) / temp));
  for (auto& v : p) v /= z;
  if (opt.top_p < 1.0) {
    double c = 0;
    int64_t n = 0;
    while (n < keep) {
      c += p[size_t(n++)];
      if (c >= opt.top_p) break;
    }
    keep = n;
    z = 0;
    for (int64_t i = 0; i < keep; ++i) z += p[size_t(i)];
    for (int64_t i = 0; i < keep; ++i) p[size_t(i)] /= z;
  }
  double c = 0;
  for (int64_t i = 0; i < keep; ++i) {
    c += p[size_t(i)];
    if (u < c) return idx[size_t(i)];
  }
  return idx[size_t(keep - 1)];
}

Tensor RoFormerLM::generate(const Tensor& prompt, int64_t max_new_tokens, const GenerateOptions& opt,
                            std::vector<Tensor>* step_logits) {
  LD_CHECK(prompt.dim() == 2 && prompt.size(1) > 0, "generate: expected a prompt [B, T0], T0 > 0");
  LD_CHECK(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", max_new_tokens);
  check_generate_options(opt);
  NoGradGuard ng;
  const int64_t B = prompt.size(0);
  Generator gen(opt.seed);
  std::vector<KVCache> caches = new_cache();
  std::vector<Tensor> out = {prompt};
  Tensor input = prompt;
  for (int64_t s = 0; s < max_new_tokens; ++s) {
    Tensor logits = forward(input, &caches);
    Tensor last = logits.select(1, logits.size(1) - 1).contiguous();  // [B, V]
    if (step_logits) step_logits->push_back(last);
    std::vector<double> all = last.to_vector(), us = rand({B}, gen, DType::f64).to_vector();
    const int64_t V = last.size(1);
    std::vector<int64_t> next(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      next[size_t(b)] = sample_token(std::vector<double>(all.begin() + b * V, all.begin() + (b + 1) * V), opt,
                                     us[size_t(b)]);
    input = from_vector(next, {B, 1});
    out.push_back(input);
  }
  return cat(out, 1);
}

// ---------------------------------------------------------------- encoder

RoFormerEncoder::RoFormerEncoder(const RoFormerEncoderConfig& cfg, Generator& gen)
    : Module("RoFormerEncoder"), config(cfg) {
  LD_CHECK(cfg.position != PositionEncoding::rope2d, "RoFormerEncoder: rope2d is for images (ViT)");
  check_transformer("RoFormerEncoder", cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.position,
                    cfg.rope_base);
  check_size("RoFormerEncoder", "vocab_size", cfg.vocab_size);
  check_size("RoFormerEncoder", "max_len", cfg.max_len);
  check_size("RoFormerEncoder", "n_classes", cfg.n_classes);
  tok_embedding = register_module("tok_embedding", std::make_shared<Embedding>(cfg.vocab_size, cfg.d_model, gen));
  init::normal_(tok_embedding->weight, gen, 0.0, 0.02);
  if (cfg.position == PositionEncoding::learned) pos_embedding = learned_table(*this, cfg.max_len, cfg.d_model, gen);
  AttentionConfig a = attention_config(cfg.kind, cfg.position, cfg.rope_base, cfg.pairing, false);
  blocks = make_blocks(*this, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, a, cfg.dropout, gen);
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(cfg.d_model));
  head = register_module("head", std::make_shared<Linear>(cfg.d_model, cfg.n_classes, true, gen));
}

Tensor RoFormerEncoder::encode(const Tensor& tokens, const Tensor& key_valid) {
  LD_CHECK(tokens.dim() == 2, "RoFormerEncoder: expected tokens [B, T], got ", shape_str(tokens.shape()));
  const int64_t T = tokens.size(1);
  Tensor x = add_positions(tok_embedding->forward(tokens), config.position, pos_embedding, 0);
  AttentionInputs in;
  in.key_valid = key_valid;
  if (config.position == PositionEncoding::rope1d)
    std::tie(in.cos, in.sin) = rope_tables_1d(arange(double(0), double(T), 1.0, DType::f64),
                                              config.d_model / config.n_heads, config.rope_base, {x.dtype(), x.device()});
  for (const auto& m : *blocks) x = static_cast<TransformerBlock&>(*m).forward(x, in);
  return ln_f->forward(x);
}

Tensor RoFormerEncoder::forward(const Tensor& tokens, const Tensor& key_valid) {
  Tensor h = encode(tokens, key_valid);
  Tensor pooled;
  if (config.pooling == Pooling::cls) {
    pooled = h.select(1, 0);
  } else if (key_valid.defined()) {
    Tensor m = ne(key_valid.to(h.device()).to(h.dtype()), zeros({1}, {h.dtype(), h.device()})).unsqueeze(-1);  // [B, T, 1]
    pooled = sum(h * m, {1}) / clamp(sum(m, {1}), 1.0, std::nullopt);
  } else {
    pooled = mean(h, {1});
  }
  return head->forward(pooled);
}

// ---------------------------------------------------------------- ViT

ViT::ViT(const ViTConfig& cfg, Generator& gen) : Module("ViT"), config(cfg) {
  check_transformer("ViT", cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.position, cfg.rope_base);
  check_size("ViT", "image_size", cfg.image_size);
  check_size("ViT", "channels", cfg.channels);
  check_size("ViT", "n_classes", cfg.n_classes);
  LD_CHECK(cfg.patch >= 1 && cfg.patch <= cfg.image_size, "ViT: patch must be in [1, image_size ", cfg.image_size,
           "], got ", cfg.patch);
  LD_CHECK(cfg.image_size % cfg.patch == 0, "ViT: image_size ", cfg.image_size, " is not a multiple of patch ",
           cfg.patch);
  const int64_t n = grid() * grid() + (cfg.pooling == Pooling::cls ? 1 : 0);
  patch_embed = register_module("patch_embed", std::make_shared<Conv2d>(cfg.channels, cfg.d_model, cfg.patch,
                                                                        Conv2dOptions{cfg.patch, 0, 1, true}, gen));
  if (cfg.pooling == Pooling::cls) {
    cls_token = register_parameter("cls_token", empty({1, 1, cfg.d_model}));
    init::normal_(cls_token, gen, 0.0, 0.02);
  }
  if (cfg.position == PositionEncoding::learned) pos_embedding = learned_table(*this, n, cfg.d_model, gen);
  LD_CHECK(cfg.position != PositionEncoding::sinusoidal, "ViT: sinusoidal positions are not supported");
  AttentionConfig a = attention_config(cfg.kind, cfg.position, cfg.rope_base, RopePairing::interleaved, false);
  blocks = make_blocks(*this, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, a, cfg.dropout, gen);
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(cfg.d_model));
  head = register_module("head", std::make_shared<Linear>(cfg.d_model, cfg.n_classes, true, gen));
}

std::pair<Tensor, Tensor> ViT::patch_coordinates(int64_t rows, int64_t cols) const {
  std::vector<double> px(size_t(rows * cols)), py(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      px[size_t(r * cols + c)] = config.position == PositionEncoding::rope1d ? double(r * cols + c) : double(c);
      py[size_t(r * cols + c)] = double(r);
    }
  return {from_vector(px, {rows * cols}, DType::f64), from_vector(py, {rows * cols}, DType::f64)};
}

std::pair<Tensor, Tensor> ViT::rope_tables(const Tensor& pos_x, const Tensor& pos_y, TensorOptions opt) const {
  const int64_t hd = config.d_model / config.n_heads;
  Tensor angles;
  if (config.position == PositionEncoding::rope2d) angles = rope_angles_2d(pos_x, pos_y, hd, config.rope_base);
  else if (config.position == PositionEncoding::rope1d) angles = rope_angles_1d(pos_x, hd, config.rope_base);
  else return {};
  if (config.pooling == Pooling::cls) angles = cat({zeros({1, angles.size(1)}, angles.dtype()), angles}, 0);
  return rope_cos_sin(angles, opt);
}

Tensor ViT::embed(const Tensor& images) {
  const bool fixed = pos_embedding.defined();  // learned positions exist for the trained grid only
  LD_CHECK(images.dim() == 4 && images.size(1) == config.channels && images.size(2) % config.patch == 0 &&
               images.size(3) % config.patch == 0 &&
               (!fixed || (images.size(2) == config.image_size && images.size(3) == config.image_size)),
           "ViT: expected images [B, ", config.channels, ", ", config.image_size, ", ", config.image_size, "]",
           fixed ? "" : " (or any multiple of the patch size)", ", got ", shape_str(images.shape()));
  const int64_t B = images.size(0);
  Tensor x = patch_embed->forward(images).flatten(2).transpose(1, 2);  // [B, N, d]
  if (cls_token.defined()) x = cat({cls_token.expand({B, 1, config.d_model}), x}, 1);
  if (pos_embedding.defined()) x = x + pos_embedding;
  return x;
}

Tensor ViT::forward(const Tensor& images) {
  LD_CHECK(images.dim() == 4, "ViT: expected images [B, C, H, W], got ", shape_str(images.shape()));
  auto [px, py] = patch_coordinates(images.size(2) / config.patch, images.size(3) / config.patch);
  return forward(images, px, py);
}

Tensor ViT::forward(const Tensor& images, const Tensor& pos_x, const Tensor& pos_y) {
  Tensor x = embed(images);
  AttentionInputs in;
  std::tie(in.cos, in.sin) = rope_tables(pos_x, pos_y, {x.dtype(), x.device()});
  for (const auto& m : *blocks) x = static_cast<TransformerBlock&>(*m).forward(x, in);
  x = ln_f->forward(x);
  Tensor pooled = config.pooling == Pooling::cls ? x.select(1, 0) : mean(x, {1});
  return head->forward(pooled);
}

}  // namespace liandan::nn
