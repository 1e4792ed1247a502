#pragma once
// The DDPM U-Net (Ho et al. 2020, appendix B; the layout of their TF code) for small images:
//
//   t -> sinusoidal(base) -> Linear(base, E) -> SiLU -> Linear(E, E) = temb        (E = time_embed_dim)
//   x -> conv3x3(in, base) ------------------------------------------------------- skip
//     level i (channels base * channel_mult[i]):
//       num_res_blocks x [ResBlock (+ self-attention if the level's resolution is listed)] -- skip each
//       downsample (stride-2 conv3x3, or 2x2 average pooling), except after the last level -- skip
//     middle: ResBlock, self-attention (mid_attention), ResBlock
//     level i in reverse:
//       (num_res_blocks + 1) x [cat(h, skip) -> ResBlock (+ self-attention)]
//       nearest 2x upsampling -> conv3x3, except after level 0
//   -> GroupNorm -> SiLU -> conv3x3(base, out_channels)
//
// ResBlock(in, out): h = conv3x3(SiLU(GN(x))); h += Linear(SiLU(temb))[:, :, None, None];
//                    h = conv3x3(dropout(SiLU(GN(h)))); return skip(x) + h   (skip = 1x1 conv when in != out)
// Self-attention: x + MHA(GN(x)) over the H*W positions (no position encoding, as in DDPM).
//
// Timesteps: `t` is a float tensor [B]; the embedding takes t * time_scale as it is (continuous or
// discrete). DDPM passes integer steps 0..999; continuous-time SDE models pass t in [0, 1] and set
// time_scale = 999 so both use the same frequency range.
//
// Attention placement is fixed at construction: the resolution of level i is image_size / 2^i, and a
// level gets attention when that resolution is in attention_resolutions. The convolutions accept any
// H, W divisible by 2^(levels - 1) (so the skips line up); 28x28 and 32x32 with 3 levels both work.
//
// Init: PyTorch's defaults for Conv2d / Linear (kaiming_uniform, a = sqrt 5), GroupNorm weight 1, bias 0.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/ops.h"
#include "diffusion/mlp_denoiser.h"  // timestep_embedding
#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace liandan::diffusion {

enum class DownsampleKind { conv, avg_pool };

struct UNetConfig {
  int64_t in_channels = 1;
  int64_t out_channels = 0;  // 0: in_channels (epsilon / x0 / v prediction)
  int64_t base_channels = 32;
  std::vector<int64_t> channel_mult = {1, 2, 4};
  int64_t num_res_blocks = 2;
  int64_t groups = 8;                             // GroupNorm groups; every channel count must divide
  int64_t image_size = 28;                        // only to place attention (see above)
  std::vector<int64_t> attention_resolutions = {};  // e.g. {7} for 28x28, {16} or {8} for 32x32
  bool mid_attention = true;
  int64_t attention_heads = 1;
  double dropout = 0.0;
  int64_t time_embed_dim = 0;                     // 0: 4 * base_channels
  double time_scale = 1.0;
  DownsampleKind downsample = DownsampleKind::conv;
};

// The time embedding is DDPM's sinusoidal table, diffusion::timestep_embedding (mlp_denoiser.h).

class ResBlock : public nn::Module {
 public:
  ResBlock(int64_t in_ch, int64_t out_ch, int64_t temb_dim, int64_t groups, double dropout, Generator& gen);
  using Module::forward;
  // temb_act: SiLU(temb) [B, temb_dim], computed once per forward by the U-Net.
  Tensor forward(const Tensor& x, const Tensor& temb_act);
  int64_t in_ch, out_ch;
  std::shared_ptr<nn::GroupNorm> norm1, norm2;
  std::shared_ptr<nn::Conv2d> conv1, conv2, skip;  // skip: null when in_ch == out_ch
  std::shared_ptr<nn::Linear> temb_proj;
  std::shared_ptr<nn::Dropout> drop;
};

class AttnBlock : public nn::Module {
 public:
  AttnBlock(int64_t channels, int64_t heads, int64_t groups, Generator& gen);
  Tensor forward(const Tensor& x) override;  // [B, C, H, W] -> same
  std::shared_ptr<nn::GroupNorm> norm;
  std::shared_ptr<nn::MultiheadAttention> attn;
};

class UNet : public nn::Module {
 public:
  explicit UNet(UNetConfig cfg = {}, Generator& gen = default_generator());
  using Module::forward;
  // x: [B, in_channels, H, W]; t: [B] timesteps (any dtype; read as floats). Returns [B, out_channels, H, W].
  Tensor forward(const Tensor& x, const Tensor& t);

  const UNetConfig& config() const { return cfg_; }

  // One level of the down or up path (named down.i / up.i).
  struct Level : nn::Module {
    Level() : Module("UNetLevel") {}
    std::vector<std::shared_ptr<ResBlock>> res;
    std::vector<std::shared_ptr<AttnBlock>> attn;  // empty, or one per res block
    std::shared_ptr<nn::Conv2d> resample;          // down: stride-2 conv; up: conv after upsampling; or null
  };

  std::shared_ptr<nn::Linear> temb_fc1, temb_fc2;
  std::shared_ptr<nn::Conv2d> conv_in, conv_out;
  std::vector<std::shared_ptr<Level>> down, up;  // up[0] is the deepest level
  std::shared_ptr<ResBlock> mid1, mid2;
  std::shared_ptr<AttnBlock> mid_attn;  // null without mid_attention
  std::shared_ptr<nn::GroupNorm> norm_out;

 private:
  UNetConfig cfg_;
};

}  // namespace liandan::diffusion
