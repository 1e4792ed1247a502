#pragma once
// The RoFormer family as models: a decoder-only LM with KV-cached generation, an encoder with a
// classification head, and a ViT with 2-D RoPE over the patch grid.
//
// Blocks are pre-LN: x = x + attn(LN(x)); x = x + FFN(LN(x)), FFN = Linear -> GELU (exact) -> Linear.
// Position encodings (AttentionConfig::position):
//   none | rope1d | rope2d (ViT)   handled inside attention (RoPE on q, k of every layer; the tables are
//                                  computed once per forward and shared by all layers)
//   sinusoidal                     added to the token embeddings (fixed table, no parameters)
//   learned                        added to the token embeddings (parameter `pos_embedding` [max_len, d],
//                                  N(0, 0.02^2)); positions past max_len are an error
// Initialization: token embedding N(0, 0.02^2) (GPT-2), Linear layers as torch.nn.Linear.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/ops.h"
#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace liandan::nn {

// One pre-LN transformer block.
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, int64_t n_heads, int64_t d_ff, const AttentionConfig& cfg,
                   Generator& gen = default_generator());
  using Module::forward;
  Tensor forward(const Tensor& x, const AttentionInputs& in);
  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<MultiheadAttention> attn;
  std::shared_ptr<FeedForward> ffn;
  std::shared_ptr<Dropout> drop;  // residual dropout (p = cfg.dropout)
};

struct RoFormerLMConfig {
  int64_t vocab_size = 256;
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t d_ff = 1024;
  int64_t max_len = 1024;  // learned positions only
  AttentionKind kind = AttentionKind::softmax;
  PositionEncoding position = PositionEncoding::rope1d;
  double rope_base = 10000.0;
  RopePairing pairing = RopePairing::interleaved;
  double dropout = 0.0;
  bool bias = true;
};

struct GenerateOptions {
  bool greedy = true;        // argmax; otherwise sample with temperature / top_k / top_p
  double temperature = 1.0;
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // nucleus: smallest set of tokens with cumulative probability >= top_p
  uint64_t seed = 0;
};

// Decoder-only LM: tokens [B, T] (i64) -> logits [B, T, vocab]. Always causal. The constructor checks the
// config (every size >= 1, d_model divisible by n_heads, dropout in [0, 1), rope_base > 0), as do the
// encoder's and the ViT's (there also 1 <= patch <= image_size, image_size a multiple of patch).
class RoFormerLM : public Module {
 public:
  explicit RoFormerLM(const RoFormerLMConfig& cfg, Generator& gen = default_generator());
  using Module::forward;
  Tensor forward(const Tensor& tokens) override { return forward(tokens, nullptr); }
  // With `caches` (one per layer, see new_cache), the tokens continue the cached sequence: their positions
  // start at the cached length, and their keys/values are appended.
  Tensor forward(const Tensor& tokens, std::vector<KVCache>* caches);
  std::vector<KVCache> new_cache() const { return std::vector<KVCache>(size_t(config.n_layers)); }
  // Mean next-token cross-entropy of forward(tokens[:, :-1]) against tokens[:, 1:].
  Tensor loss(const Tensor& tokens);
  // Continues `prompt` [B, T0] by max_new_tokens tokens using the KV cache: returns [B, T0 + max_new_tokens].
  // Runs under NoGradGuard. `step_logits`, when given, receives the logits [B, vocab] each new token was
  // chosen from.
  Tensor generate(const Tensor& prompt, int64_t max_new_tokens, const GenerateOptions& opt = {},
                  std::vector<Tensor>* step_logits = nullptr);

  RoFormerLMConfig config;
  std::shared_ptr<Embedding> tok_embedding;
  Tensor pos_embedding;  // learned only: [max_len, d]
  std::shared_ptr<ModuleList> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> lm_head;
};

// Throws unless temperature is finite and > 0, top_k >= 0 and top_p in (0, 1] (generate and sample_token
// check; callers that sample only at the end of a run check their options up front with it).
void check_generate_options(const GenerateOptions& opt);

// Picks one token from logits [V] (f32/f64) by the options; `u` is a uniform draw in [0, 1).
int64_t sample_token(const std::vector<double>& logits, const GenerateOptions& opt, double u);

enum class Pooling { mean, cls };

struct RoFormerEncoderConfig {
  int64_t vocab_size = 256;
  int64_t d_model = 128;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t d_ff = 512;
  int64_t max_len = 512;
  int64_t n_classes = 2;  // 1 for regression
  AttentionKind kind = AttentionKind::softmax;
  PositionEncoding position = PositionEncoding::rope1d;
  double rope_base = 10000.0;
  RopePairing pairing = RopePairing::interleaved;
  Pooling pooling = Pooling::mean;  // cls: the first token's final state (the caller puts a [CLS] token there)
  double dropout = 0.0;
};

// Bidirectional encoder: tokens [B, T] (+ optional key_valid [B, T] padding mask) -> [B, n_classes].
class RoFormerEncoder : public Module {
 public:
  explicit RoFormerEncoder(const RoFormerEncoderConfig& cfg, Generator& gen = default_generator());
  using Module::forward;
  Tensor forward(const Tensor& tokens) override { return forward(tokens, Tensor()); }
  Tensor forward(const Tensor& tokens, const Tensor& key_valid);
  Tensor encode(const Tensor& tokens, const Tensor& key_valid);  // final hidden states [B, T, d]

  RoFormerEncoderConfig config;
  std::shared_ptr<Embedding> tok_embedding;
  Tensor pos_embedding;
  std::shared_ptr<ModuleList> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> head;
};

struct ViTConfig {
  int64_t image_size = 28;  // square images
  int64_t channels = 1;
  int64_t patch = 4;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t d_ff = 512;
  int64_t n_classes = 10;
  AttentionKind kind = AttentionKind::softmax;
  PositionEncoding position = PositionEncoding::rope2d;  // rope2d | rope1d (row-major order) | learned | none
  double rope_base = 100.0;  // small grids: a smaller base spreads the frequencies over the few positions
  Pooling pooling = Pooling::mean;  // cls: a learned CLS token, unrotated (angle 0), is prepended
  double dropout = 0.0;
};

// images [B, C, H, W] -> logits [B, n_classes]. Patches: Conv2d with kernel = stride = patch.
class ViT : public Module {
 public:
  explicit ViT(const ViTConfig& cfg, Generator& gen = default_generator());
  using Module::forward;
  Tensor forward(const Tensor& images) override;
  // With explicit patch coordinates ([N] each, N = grid^2 patches in row-major order; rope2d: x = column,
  // y = row; rope1d uses pos_x as the 1-D position).
  Tensor forward(const Tensor& images, const Tensor& pos_x, const Tensor& pos_y);
  // Patch tokens [B, N(+1), d] before the blocks, and the RoPE tables for them.
  Tensor embed(const Tensor& images);
  std::pair<Tensor, Tensor> rope_tables(const Tensor& pos_x, const Tensor& pos_y, TensorOptions opt) const;
  // Default coordinates: x = column, y = row (rope1d: pos_x = row-major index), for a grid of
  // rows × cols patches (default: the configured image size). Images larger than the training size are
  // accepted with RoPE or no positions (resolution extrapolation); learned positions need the trained size.
  std::pair<Tensor, Tensor> patch_coordinates() const { return patch_coordinates(grid(), grid()); }
  std::pair<Tensor, Tensor> patch_coordinates(int64_t rows, int64_t cols) const;
  int64_t grid() const { return config.image_size / config.patch; }

  ViTConfig config;
  std::shared_ptr<Conv2d> patch_embed;
  Tensor cls_token;      // [1, 1, d] (cls pooling)
  Tensor pos_embedding;  // learned: [N(+1), d]
  std::shared_ptr<ModuleList> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> head;
};

}  // namespace liandan::nn
