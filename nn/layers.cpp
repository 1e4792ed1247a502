#include "nn/layers.h"

#include <cmath>

#include "nn/init.h"

namespace liandan::nn {

// ---------------------------------------------------------------- Linear

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator& gen)
    : Module("Linear"), in_features(in), out_features(out) {
  LD_CHECK(in >= 0 && out >= 0, "Linear: negative size (in ", in, ", out ", out, ")");
  weight = register_parameter("weight", empty({out, in}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  reset_parameters(gen);
}

void Linear::reset_parameters(Generator& gen) {
  // kaiming_uniform(a = sqrt 5, fan_in) = U(-1/sqrt(in), 1/sqrt(in)), as torch.nn.Linear.
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = in_features > 0 ? 1.0 / std::sqrt(double(in_features)) : 0.0;
    init::uniform_(bias, gen, -bound, bound);
  }
}

Tensor Linear::forward(const Tensor& x) {
  LD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_features, "Linear(", in_features, ", ", out_features,
           "): expected input [..., ", in_features, "], got ", x.defined() ? shape_str(x.shape()) : "undefined");
  // weight.t() is a transposed view: matmul hands it to BLAS with the transpose flag, no copy.
  Tensor y = matmul(x, weight.t());
  return bias.defined() ? add(y, bias) : y;
}

Tensor Linear::forward_act(const Tensor& x, BiasActivation act, const Tensor& residual) {
  if (!autocast_enabled()) {
    Tensor y = forward(x);
    if (act != BiasActivation::none) y = gelu(y, act == BiasActivation::gelu_tanh ? GeluApprox::tanh : GeluApprox::none);
    return residual.defined() ? add(residual, y) : y;
  }
  LD_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_features, "Linear(", in_features, ", ", out_features,
           "): expected input [..., ", in_features, "], got ", x.defined() ? shape_str(x.shape()) : "undefined");
  Tensor y = autocast_matmul(x, weight.t());
  if (!bias.defined() && act == BiasActivation::none && !residual.defined()) return y;
  return bias_act(y, bias, act, residual);
}

// ---------------------------------------------------------------- Embedding

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen)
    : Module("Embedding"), num_embeddings(num), embedding_dim(dim) {
  LD_CHECK(num >= 0 && dim >= 0, "Embedding: negative size (", num, ", ", dim, ")");
  weight = register_parameter("weight", empty({num, dim}));
  init::normal_(weight, gen);
}

Tensor Embedding::forward(const Tensor& indices) { return embedding(weight, indices); }

// ---------------------------------------------------------------- norms

LayerNorm::LayerNorm(Shape shape, double eps, bool affine, bool with_bias)
    : Module("LayerNorm"), normalized_shape(std::move(shape)), eps(eps) {
  LD_CHECK(!normalized_shape.empty(), "LayerNorm: normalized_shape is empty");
  for (int64_t d : normalized_shape)
    LD_CHECK(d >= 1, "LayerNorm: normalized_shape ", shape_str(normalized_shape), " has a size < 1");
  if (affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    if (with_bias) bias = register_parameter("bias", zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, normalized_shape, weight, bias, eps); }
Tensor LayerNorm::forward(const Tensor& x, DType out) {
  return layer_norm(x, normalized_shape, weight, bias, eps, out);
}

RMSNorm::RMSNorm(Shape shape, double eps, bool affine)
    : Module("RMSNorm"), normalized_shape(std::move(shape)), eps(eps) {
  LD_CHECK(!normalized_shape.empty(), "RMSNorm: normalized_shape is empty");
  for (int64_t d : normalized_shape)
    LD_CHECK(d >= 1, "RMSNorm: normalized_shape ", shape_str(normalized_shape), " has a size < 1");
  if (affine) weight = register_parameter("weight", ones(normalized_shape));
}

Tensor RMSNorm::forward(const Tensor& x) { return rms_norm(x, normalized_shape, weight, eps); }
Tensor RMSNorm::forward(const Tensor& x, DType out) { return rms_norm(x, normalized_shape, weight, eps, out); }

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps, bool affine)
    : Module("GroupNorm"), num_groups(groups), num_channels(channels), eps(eps) {
  LD_CHECK(channels >= 1, "GroupNorm: num_channels must be >= 1, got ", channels);
  LD_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: ", channels, " channels are not divisible into ",
           groups, " groups");
  if (affine) {
    weight = register_parameter("weight", ones({channels}));
    bias = register_parameter("bias", zeros({channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) {
  LD_CHECK(x.defined() && x.dim() >= 2 && x.size(1) == num_channels, "GroupNorm(", num_groups, ", ", num_channels,
           "): expected input [N, ", num_channels, ", *], got ", x.defined() ? shape_str(x.shape()) : "undefined");
  return group_norm(x, num_groups, weight, bias, eps);
}

// ---------------------------------------------------------------- Dropout

Dropout::Dropout(double p, Generator& gen) : Module("Dropout"), p(p), gen_(&gen) {
  LD_CHECK(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got ", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), *gen_); }

// ---------------------------------------------------------------- Conv2d

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, Conv2dOptions opt, Generator& gen)
    : Module("Conv2d"), in_channels(in), out_channels(out), kernel_size(k), options(opt) {
  LD_CHECK(in > 0 && out > 0 && k > 0, "Conv2d: sizes must be positive (in ", in, ", out ", out, ", kernel ", k, ")");
  LD_CHECK(opt.groups >= 1 && in % opt.groups == 0 && out % opt.groups == 0, "Conv2d: in ", in, " and out ", out,
           " channels must be divisible by groups ", opt.groups);
  LD_CHECK(opt.stride >= 1 && opt.padding >= 0, "Conv2d: bad stride ", opt.stride, " or padding ", opt.padding);
  weight = register_parameter("weight", empty({out, in / opt.groups, k, k}));
  if (opt.bias) bias = register_parameter("bias", empty({out}));
  reset_parameters(gen);
}

void Conv2d::reset_parameters(Generator& gen) {
  init::kaiming_uniform_(weight, gen, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(double(init::calculate_fans(weight).first));
    init::uniform_(bias, gen, -bound, bound);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, options.stride, options.padding, options.groups);
}

// ---------------------------------------------------------------- feed-forward

FeedForward::FeedForward(int64_t dim, int64_t hidden, bool bias, GeluApprox approx, Generator& gen)
    : Module("FeedForward"), approx(approx) {
  LD_CHECK(dim >= 1 && hidden >= 1, "FeedForward: dim and hidden must be >= 1, got ", dim, " and ", hidden);
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, bias, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, bias, gen));
}

Tensor FeedForward::forward(const Tensor& x) { return forward(x, Tensor()); }

Tensor FeedForward::forward(const Tensor& x, const Tensor& residual) {
  Tensor h = fc1->forward_act(x, approx == GeluApprox::tanh ? BiasActivation::gelu_tanh : BiasActivation::gelu);
  return residual.defined() ? fc2->forward_act(h, BiasActivation::none, residual) : fc2->forward(h);  // f32 out
}

GLUFeedForward::GLUFeedForward(int64_t dim, int64_t hidden, GLUActivation act, bool bias, Generator& gen)
    : Module(act == GLUActivation::swiglu ? "SwiGLU" : act == GLUActivation::geglu ? "GeGLU" : "ReGLU"),
      activation(act) {
  LD_CHECK(dim >= 1 && hidden >= 1, type_name(), ": dim and hidden must be >= 1, got ", dim, " and ", hidden);
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(dim, hidden, bias, gen));
  up_proj = register_module("up_proj", std::make_shared<Linear>(dim, hidden, bias, gen));
  down_proj = register_module("down_proj", std::make_shared<Linear>(hidden, dim, bias, gen));
}

Tensor GLUFeedForward::forward(const Tensor& x) {
  Tensor g = gate_proj->forward(x);
  switch (activation) {
    case GLUActivation::swiglu: g = silu(g); break;
    case GLUActivation::geglu: g = gelu(g); break;
    case GLUActivation::reglu: g = relu(g); break;
  }
  return down_proj->forward(mul(g, up_proj->forward(x)));
}

// ---------------------------------------------------------------- containers

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) : Module("Sequential") {
  for (auto& m : modules) push_back(m);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : modules_) h = m->forward(h);
  return h;
}

const std::shared_ptr<Module>& Sequential::operator[](size_t i) const {
  LD_CHECK(i < modules_.size(), type_name(), ": index ", i, " out of range (size ", modules_.size(), ")");
  return modules_[i];
}

Tensor ModuleList::forward(const Tensor&) {
  LD_FAIL("ModuleList has no forward: iterate over its modules");
}

}  // namespace liandan::nn
