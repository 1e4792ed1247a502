#pragma once
// Parameter initializers, as torch.nn.init. Each fills its (contiguous, floating) tensor in place under
// NoGradGuard, draws from the given Generator (so a seed reproduces a model exactly) and returns the
// tensor handle.
//
// Fans follow PyTorch: for a weight [out, in, k...] fan_in = in * prod(k), fan_out = out * prod(k); a
// 1-D tensor has fan_in = fan_out = its size.
#include <cstdint>
#include <utility>

#include "core/random.h"
#include "core/tensor.h"

namespace liandan::nn::init {

enum class Nonlinearity { linear, identity, sigmoid, tanh, relu, leaky_relu, gelu, silu, selu };
enum class FanMode { fan_in, fan_out, fan_avg };

// Gain for the variance-preserving schemes. PyTorch's values for linear/identity/sigmoid (1), tanh
// (5/3), relu (sqrt 2), leaky_relu (sqrt(2 / (1 + slope^2)), `param` = slope, default 0.01), selu (3/4).
// gelu and silu (not in PyTorch) use the definition that gives relu its sqrt(2): gain = 1 / sqrt(E[f(z)^2])
// for z ~ N(0, 1), so a layer followed by f keeps the second moment of a unit-variance input:
//   gelu: E[(z Phi(z))^2] = 1/3 + 1/(2 sqrt(3) pi)  -> gain 1.5335...
//   silu: E[(z sigmoid(z))^2] (numerical, 0.3557...) -> gain 1.6766...
double calculate_gain(Nonlinearity f, double param = -1);
std::pair<int64_t, int64_t> calculate_fans(const Tensor& t);  // (fan_in, fan_out)

Tensor zeros_(const Tensor& t);
Tensor ones_(const Tensor& t);
Tensor constant_(const Tensor& t, double value);

Tensor uniform_(const Tensor& t, Generator& gen, double lo = 0.0, double hi = 1.0);
Tensor normal_(const Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0);

// N(mean, std^2) conditioned on [a, b], by the inverse CDF (one uniform per element, no rejection
// loop): every value lies in [a, b] exactly, also after rounding to f32.
Tensor trunc_normal_(const Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0, double a = -2.0,
                     double b = 2.0);

// U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)); N(0, gain^2 * 2 / (fan_in + fan_out)).
Tensor xavier_uniform_(const Tensor& t, Generator& gen, double gain = 1.0);
Tensor xavier_normal_(const Tensor& t, Generator& gen, double gain = 1.0);

// std = gain / sqrt(fan), gain = calculate_gain(f, a); uniform uses bound = sqrt(3) * std.
// PyTorch's defaults (a = 0, fan_in, leaky_relu) give He init; nn.Linear uses a = sqrt(5).
Tensor kaiming_uniform_(const Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::fan_in,
                        Nonlinearity f = Nonlinearity::leaky_relu);
Tensor kaiming_normal_(const Tensor& t, Generator& gen, double a = 0.0, FanMode mode = FanMode::fan_in,
                       Nonlinearity f = Nonlinearity::leaky_relu);

// Keras/JAX VarianceScaling: variance = scale / fan (fan_in, fan_out or their mean). `truncated_normal`
// is cut at +-2 std and rescaled so the result still has the asked variance; `uniform` uses
// bound = sqrt(3 * scale / fan). (DDPM's U-Net uses VarianceScaling(1, fan_avg, uniform).)
enum class Distribution { normal, truncated_normal, uniform };
Tensor variance_scaling_(const Tensor& t, Generator& gen, double scale = 1.0, FanMode mode = FanMode::fan_in,
                         Distribution dist = Distribution::truncated_normal);

// Scale-aware init: Gaussian draws, centered and rescaled so that the tensor's mean is exactly 0 and its
// RMS (population std) exactly `std`, i.e. ||t|| = sqrt(numel) * std. The scale is then a known property of
// the parameter rather than a statistical one, which is what scale-aware optimizers assume (Amos: the
// expected scale eta of a matrix is its init std). A one-element tensor gets +-std.
Tensor scale_aware_(const Tensor& t, Generator& gen, double std);

// Standard normal quantile Phi^-1(p), p in (0, 1): Phi(result) matches p to 1e-12 relative, from p = 1e-300
// to 1 - 1e-10 (exposed for tests).
double normal_quantile(double p);

}  // namespace liandan::nn::init
