#include "diffusion/unet.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace liandan::diffusion {

// ---------------------------------------------------------------- ResBlock

ResBlock::ResBlock(int64_t in, int64_t out, int64_t temb_dim, int64_t groups, double dropout, Generator& gen)
    : Module("ResBlock"), in_ch(in), out_ch(out) {
  norm1 = register_module("norm1", std::make_shared<nn::GroupNorm>(groups, in));
  conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(in, out, 3, nn::Conv2dOptions{.padding = 1}, gen));
  temb_proj = register_module("temb_proj", std::make_shared<nn::Linear>(temb_dim, out, true, gen));
  norm2 = register_module("norm2", std::make_shared<nn::GroupNorm>(groups, out));
  drop = register_module("drop", std::make_shared<nn::Dropout>(dropout, default_generator()));  // see TransformerBlock
  conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(out, out, 3, nn::Conv2dOptions{.padding = 1}, gen));
  if (in != out) skip = register_module("skip", std::make_shared<nn::Conv2d>(in, out, 1, nn::Conv2dOptions{}, gen));
}

namespace {
// SiLU(GroupNorm(x)) as one fused op (core group_norm_silu); the module keeps the parameters. Its output feeds a
// convolution: under autocast it is written in the GEMM's half format (half the bytes for the norm to write, for
// im2col to read, and back for col2im and the norm's backward) unless dropout comes in between (f32 only).
Tensor norm_silu(const nn::GroupNorm& gn, const Tensor& x, bool to_conv = true) {
  LD_CHECK(x.dim() == 4 && x.size(1) == gn.num_channels, "UNet: GroupNorm(", gn.num_groups, ", ", gn.num_channels,
           ") got input ", shape_str(x.shape()));
  return group_norm_silu(x, gn.num_groups, gn.weight, gn.bias, gn.eps,
                         to_conv ? autocast_operand_dtype(x.dtype()) : x.dtype());
}
}  // namespace

Tensor ResBlock::forward(const Tensor& x, const Tensor& temb_act) {
  int64_t B = x.size(0);
  // conv1's bias joins the time embedding's projection first ([B, out] + [out]: tiny), so the activation takes one
  // broadcast add instead of two, and its gradient one reduction.
  Tensor shift = temb_proj->forward(temb_act);
  if (conv1->bias.defined()) shift = shift + conv1->bias;
  const nn::Conv2dOptions& o1 = conv1->options;
  Tensor h = conv2d(norm_silu(*norm1, x), conv1->weight, Tensor(), o1.stride, o1.padding, o1.groups) +
             shift.view({B, out_ch, 1, 1});
  bool dropout = drop->p > 0 && drop->is_training();
  h = norm_silu(*norm2, h, !dropout);
  if (dropout) h = drop->forward(h);
  h = conv2->forward(h);
  return (skip ? skip->forward(x) : x) + h;
}

// ---------------------------------------------------------------- AttnBlock

AttnBlock::AttnBlock(int64_t channels, int64_t heads, int64_t groups, Generator& gen) : Module("AttnBlock") {
  norm = register_module("norm", std::make_shared<nn::GroupNorm>(groups, channels));
  nn::AttentionConfig c;
  c.kind = nn::AttentionKind::softmax;
  c.position = nn::PositionEncoding::none;
  attn = register_module("attn", std::make_shared<nn::MultiheadAttention>(channels, heads, c, gen));
}

Tensor AttnBlock::forward(const Tensor& x) {
  int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  // [B, HW, C]: one token per position. Contiguous, so that the projections are one GEMM over all B*HW
  // tokens rather than a batched product per image — under autocast the projection's cast to the half format
  // already writes them so (one pass, not a copy and then a cast).
  Tensor h = norm->forward(x).view({B, C, H * W}).transpose(1, 2);
  if (!attn->half_heads({})) h = h.contiguous();
  h = attn->forward(h).transpose(1, 2).reshape({B, C, H, W});
  return x + h;
}

// ---------------------------------------------------------------- UNet

UNet::UNet(UNetConfig cfg, Generator& gen) : Module("UNet"), cfg_(std::move(cfg)) {
  UNetConfig& c = cfg_;
  const int64_t L = int64_t(c.channel_mult.size());
  // Each size on its own, before any product or remainder is formed from it (groups = 0 would divide by zero).
  // Bounds: a wider or deeper U-Net could not be allocated, and the products below must not overflow.
  constexpr int64_t kMaxChannels = int64_t(1) << 20, kMaxLevels = 16;
  auto check_size = [](const char* field, int64_t v, int64_t max) {
    LD_CHECK(v >= 1 && v <= max, "UNet: ", field, " must be in [1, ", max, "], got ", v);
  };
  check_size("in_channels", c.in_channels, kMaxChannels);
  check_size("base_channels", c.base_channels, kMaxChannels);
  if (c.out_channels == 0) c.out_channels = c.in_channels;
  if (c.time_embed_dim == 0) c.time_embed_dim = 4 * c.base_channels;
  check_size("out_channels", c.out_channels, kMaxChannels);
  check_size("num_res_blocks", c.num_res_blocks, 1024);
  check_size("groups", c.groups, kMaxChannels);
  check_size("image_size", c.image_size, kMaxChannels);
  check_size("attention_heads", c.attention_heads, kMaxChannels);
  check_size("time_embed_dim", c.time_embed_dim, kMaxChannels);
  LD_CHECK(L >= 1 && L <= kMaxLevels, "UNet: channel_mult must have 1 to ", kMaxLevels, " levels, got ", L);
  LD_CHECK(c.base_channels % 2 == 0, "UNet: base_channels must be even (sinusoidal embedding), got ",
           c.base_channels);
  for (int64_t m : c.channel_mult)
    LD_CHECK(m >= 1 && m <= kMaxChannels / c.base_channels, "UNet: channel_mult entries must be in [1, ",
             kMaxChannels / c.base_channels, "] (base_channels * channel_mult <= ", kMaxChannels, "), got ", m);
  LD_CHECK(c.base_channels % c.groups == 0, "UNet: base_channels ", c.base_channels, " is not divisible into groups = ",
           c.groups);
  for (int64_t m : c.channel_mult)
    LD_CHECK((c.base_channels * m) % c.groups == 0, "UNet: channels base_channels * channel_mult = ",
             c.base_channels, " * ", m, " are not divisible into groups = ", c.groups);
  LD_CHECK(c.dropout >= 0 && c.dropout < 1, "UNet: dropout must be in [0, 1), got ", c.dropout);
  LD_CHECK(std::isfinite(c.time_scale) && c.time_scale > 0, "UNet: time_scale must be a finite number > 0, got ",
           c.time_scale);
  for (int64_t r : c.attention_resolutions)
    LD_CHECK(r >= 1, "UNet: attention_resolutions must be >= 1, got ", r);
  const int64_t E = c.time_embed_dim, nres = c.num_res_blocks;

  temb_fc1 = register_module("temb_fc1", std::make_shared<nn::Linear>(c.base_channels, E, true, gen));
  temb_fc2 = register_module("temb_fc2", std::make_shared<nn::Linear>(E, E, true, gen));
  conv_in = register_module("conv_in", std::make_shared<nn::Conv2d>(c.in_channels, c.base_channels, 3,
                                                                     nn::Conv2dOptions{.padding = 1}, gen));
  auto attn_at = [&](int64_t level) {
    int64_t res = c.image_size >> level;
    return std::find(c.attention_resolutions.begin(), c.attention_resolutions.end(), res) !=
           c.attention_resolutions.end();
  };
  auto level_blocks = [&](Level& lv, int64_t n, int64_t& ch, int64_t out, std::vector<int64_t>* skips, bool attn) {
    auto res = lv.register_module("res", std::make_shared<nn::ModuleList>());
    auto att = attn ? lv.register_module("attn", std::make_shared<nn::ModuleList>()) : nullptr;
    for (int64_t r = 0; r < n; ++r) {
      int64_t in = ch;
      if (skips) {  // up path: the block sees cat(h, skip)
        in += skips->back();
        skips->pop_back();
      }
      lv.res.push_back(res->push_back(std::make_shared<ResBlock>(in, out, E, c.groups, c.dropout, gen)));
      ch = out;
      if (att) lv.attn.push_back(att->push_back(std::make_shared<AttnBlock>(ch, c.attention_heads, c.groups, gen)));
    }
  };

  std::vector<int64_t> skips = {c.base_channels};  // channels of each saved activation, in push order
  int64_t ch = c.base_channels;
  auto downs = register_module("down", std::make_shared<nn::ModuleList>());
  for (int64_t i = 0; i < L; ++i) {
    auto lv = downs->push_back(std::make_shared<Level>());
    level_blocks(*lv, nres, ch, c.base_channels * c.channel_mult[size_t(i)], nullptr, attn_at(i));
    for (int64_t r = 0; r < nres; ++r) skips.push_back(ch);
    if (i + 1 < L) {
      if (c.downsample == DownsampleKind::conv)
        lv->resample = lv->register_module(
            "resample", std::make_shared<nn::Conv2d>(ch, ch, 3, nn::Conv2dOptions{.stride = 2, .padding = 1}, gen));
      skips.push_back(ch);
    }
    down.push_back(lv);
  }
  mid1 = register_module("mid1", std::make_shared<ResBlock>(ch, ch, E, c.groups, c.dropout, gen));
  if (c.mid_attention)
    mid_attn = register_module("mid_attn", std::make_shared<AttnBlock>(ch, c.attention_heads, c.groups, gen));
  mid2 = register_module("mid2", std::make_shared<ResBlock>(ch, ch, E, c.groups, c.dropout, gen));
  auto ups = register_module("up", std::make_shared<nn::ModuleList>());
  for (int64_t i = L - 1; i >= 0; --i) {
    auto lv = ups->push_back(std::make_shared<Level>());
    level_blocks(*lv, nres + 1, ch, c.base_channels * c.channel_mult[size_t(i)], &skips, attn_at(i));
    if (i > 0)
      lv->resample = lv->register_module(
          "resample", std::make_shared<nn::Conv2d>(ch, ch, 3, nn::Conv2dOptions{.padding = 1}, gen));
    up.push_back(lv);
  }
  norm_out = register_module("norm_out", std::make_shared<nn::GroupNorm>(c.groups, ch));
  conv_out = register_module("conv_out", std::make_shared<nn::Conv2d>(ch, c.out_channels, 3,
                                                                       nn::Conv2dOptions{.padding = 1}, gen));
}

Tensor UNet::forward(const Tensor& x, const Tensor& t) {
  const UNetConfig& c = cfg_;
  const int64_t L = int64_t(c.channel_mult.size()), f = int64_t(1) << (L - 1);
  LD_CHECK(x.defined() && x.dim() == 4 && x.size(1) == c.in_channels, "UNet: expected x [B, ", c.in_channels,
           ", H, W], got ", x.defined() ? shape_str(x.shape()) : "undefined");
  LD_CHECK(x.size(2) % f == 0 && x.size(3) % f == 0 && x.size(2) > 0 && x.size(3) > 0, "UNet: H and W (",
           x.size(2), "x", x.size(3), ") must be positive multiples of 2^(levels - 1) = ", f, " for ", L, " levels");
  LD_CHECK(t.defined() && t.dim() == 1 && t.size(0) == x.size(0), "UNet: expected t [", x.size(0),
           "] (one timestep per image), got ", t.defined() ? shape_str(t.shape()) : "undefined");
  Tensor ts = c.time_scale == 1.0 ? t : mul(t.to(DType::f64), c.time_scale);
  Tensor temb = timestep_embedding(ts.to(DType::f64).to(x.device()), c.base_channels).to(x.dtype());  // table in double
  temb = temb_fc2->forward(silu(temb_fc1->forward(temb)));
  Tensor temb_act = silu(temb);  // every ResBlock projects SiLU(temb)

  Tensor h = conv_in->forward(x);
  std::vector<Tensor> hs = {h};
  for (int64_t i = 0; i < L; ++i) {
    Level& lv = *down[size_t(i)];
    for (size_t r = 0; r < lv.res.size(); ++r) {
      h = lv.res[r]->forward(h, temb_act);
      if (!lv.attn.empty()) h = lv.attn[r]->forward(h);
      hs.push_back(h);
    }
    if (i + 1 < L) {
      h = lv.resample ? lv.resample->forward(h) : avg_pool2d(h, 2);
      hs.push_back(h);
    }
  }
  h = mid1->forward(h, temb_act);
  if (mid_attn) h = mid_attn->forward(h);
  h = mid2->forward(h, temb_act);
  for (auto& lvp : up) {
    Level& lv = *lvp;
    for (size_t r = 0; r < lv.res.size(); ++r) {
      h = lv.res[r]->forward(cat({h, hs.back()}, 1), temb_act);
      hs.pop_back();
      if (!lv.attn.empty()) h = lv.attn[r]->forward(h);
    }
    if (lv.resample) h = lv.resample->forward(upsample_nearest2d(h, 2));
  }
  return conv_out->forward(norm_silu(*norm_out, h));
}

}  // namespace liandan::diffusion
