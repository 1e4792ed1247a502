#pragma once
// A small MLP denoiser for low-dimensional toy data (2-D mixtures), and the sinusoidal timestep embedding.
//
//   temb = W2·silu(W1·embed(t))                                   embed: DDPM's sinusoidal table, [B, time_dim]
//   h    = W_in·x
//   h    = h + fc2(silu(fc1(silu(h) + temb)))   × blocks          (pre-activation residual blocks)
//   out  = W_out·silu(h)                                           [B, dim]
// The output layer starts at zero, so the untrained model predicts 0 (the mean of ε: a sensible start).
// Use it through ModuleDenoiser<MLPDenoiser> (diffusion/denoiser.h).
#include <memory>

#include "nn/layers.h"
#include "nn/module.h"

namespace liandan::diffusion {

// DDPM's timestep embedding: half = dim/2 frequencies ω_k = exp(−ln(max_period)·k/(half−1)), k = 0 … half−1,
// out = [sin(t·ω) | cos(t·ω)]: t [B] → [B, dim] in t's dtype. dim must be even and ≥ 4.
Tensor timestep_embedding(const Tensor& t, int64_t dim, double max_period = 10000.0);

struct MLPDenoiserConfig {
  int64_t dim = 2;         // data dimension
  int64_t hidden = 128;
  int64_t blocks = 3;
  int64_t time_dim = 64;   // sinusoidal embedding width
  double max_period = 10000.0;
};

class MLPDenoiser : public nn::Module {
 public:
  explicit MLPDenoiser(MLPDenoiserConfig cfg = {}, Generator& gen = default_generator());
  using Module::forward;
  // x: [B, dim], t: [B] float time labels (indices 0 … T−1 for a discrete schedule) → [B, dim].
  Tensor forward(const Tensor& x, const Tensor& t);

  MLPDenoiserConfig cfg;
  std::shared_ptr<nn::Linear> time_fc1, time_fc2, in_proj, out_proj;
  struct Block {
    std::shared_ptr<nn::Linear> fc1, fc2;
  };
  std::vector<Block> block;
};

}  // namespace liandan::diffusion
