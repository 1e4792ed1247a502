#include "diffusion/mlp_denoiser.h"

#include <cmath>

#include "nn/init.h"

namespace liandan::diffusion {

Tensor timestep_embedding(const Tensor& t, int64_t dim, double max_period) {
  LD_CHECK(t.dim() == 1, "timestep_embedding: t must be [B], got ", shape_str(t.shape()));
  LD_CHECK(dim >= 4 && dim % 2 == 0, "timestep_embedding: dim = ", dim, " must be even and >= 4");
  int64_t half = dim / 2;
  std::vector<double> w(static_cast<size_t>(half));
  for (int64_t k = 0; k < half; ++k) w[size_t(k)] = std::exp(-std::log(max_period) * double(k) / double(half - 1));
  Tensor arg = mul(t.unsqueeze(1), from_vector(w, {1, half}, {t.dtype(), t.device()}));  // [B, half]
  return cat({sin(arg), cos(arg)}, 1);
}

MLPDenoiser::MLPDenoiser(MLPDenoiserConfig c, Generator& gen) : Module("MLPDenoiser"), cfg(c) {
  // Bounds: larger sizes could not be allocated (and would overflow the weight shapes' products).
  constexpr int64_t kMaxWidth = int64_t(1) << 24;
  LD_CHECK(cfg.dim >= 1 && cfg.dim <= kMaxWidth, "MLPDenoiser: dim must be in [1, ", kMaxWidth, "], got ", cfg.dim);
  LD_CHECK(cfg.hidden >= 1 && cfg.hidden <= kMaxWidth, "MLPDenoiser: hidden must be in [1, ", kMaxWidth, "], got ",
           cfg.hidden);
  LD_CHECK(cfg.blocks >= 0 && cfg.blocks <= 65536, "MLPDenoiser: blocks must be in [0, 65536], got ", cfg.blocks);
  LD_CHECK(cfg.time_dim >= 4 && cfg.time_dim <= kMaxWidth && cfg.time_dim % 2 == 0,
           "MLPDenoiser: time_dim must be even and in [4, ", kMaxWidth, "], got ", cfg.time_dim);
  LD_CHECK(std::isfinite(cfg.max_period) && cfg.max_period > 1, "MLPDenoiser: max_period must be a finite number > 1, got ",
           cfg.max_period);
  time_fc1 = register_module("time_fc1", std::make_shared<nn::Linear>(cfg.time_dim, cfg.hidden, true, gen));
  time_fc2 = register_module("time_fc2", std::make_shared<nn::Linear>(cfg.hidden, cfg.hidden, true, gen));
  in_proj = register_module("in_proj", std::make_shared<nn::Linear>(cfg.dim, cfg.hidden, true, gen));
  for (int64_t i = 0; i < cfg.blocks; ++i) {
    auto b = std::make_shared<nn::Module>("Block");
    Block blk{b->register_module("fc1", std::make_shared<nn::Linear>(cfg.hidden, cfg.hidden, true, gen)),
              b->register_module("fc2", std::make_shared<nn::Linear>(cfg.hidden, cfg.hidden, true, gen))};
    register_module("block" + std::to_string(i), b);
    block.push_back(blk);
  }
  out_proj = register_module("out_proj", std::make_shared<nn::Linear>(cfg.hidden, cfg.dim, true, gen));
  nn::init::zeros_(out_proj->weight);
  nn::init::zeros_(out_proj->bias);
}

Tensor MLPDenoiser::forward(const Tensor& x, const Tensor& t) {
  LD_CHECK(x.dim() == 2 && x.size(1) == cfg.dim && t.dim() == 1 && t.size(0) == x.size(0),
           "MLPDenoiser: x ", shape_str(x.shape()), " and t ", shape_str(t.shape()), " (expected [B, ", cfg.dim,
           "] and [B])");
  Tensor tt = t.to(x.device());
  if (tt.dtype() != x.dtype()) tt = tt.to(x.dtype());
  Tensor temb = time_fc2->forward(silu(time_fc1->forward(timestep_embedding(tt, cfg.time_dim, cfg.max_period))));
  Tensor h = in_proj->forward(x);
  for (auto& b : block) h = add(h, b.fc2->forward(silu(b.fc1->forward(add(silu(h), temb)))));
  return out_proj->forward(silu(h));
}

}  // namespace liandan::diffusion
