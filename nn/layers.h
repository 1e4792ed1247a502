#pragma once
// Standard layers built from core ops. Default initializations follow PyTorch; every constructor that
// draws random numbers takes a Generator, so a seed reproduces a model exactly.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/random.h"
#include "nn/module.h"

namespace liandan::nn {

// y = x W^T + b, W: [out, in] (PyTorch's layout). x: [..., in] -> [..., out].
// Init as torch.nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  // [residual +] act(x Wᵀ + b). Under autocast the GEMM returns the half format and the bias, activation and
  // residual add follow in one fused pass (bias_act): a feed-forward block's hidden activation then moves in 2
  // bytes, as in PyTorch's autocast. Otherwise forward(x), the activation op and add.
  Tensor forward_act(const Tensor& x, BiasActivation act, const Tensor& residual = {});
  void reset_parameters(Generator& gen);
  int64_t in_features, out_features;
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], undefined without bias
};

// Lookup table: i64 indices [...] -> [..., dim]. Init N(0, 1) as torch.nn.Embedding.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator& gen = default_generator());
  Tensor forward(const Tensor& indices) override;
  int64_t num_embeddings, embedding_dim;
  Tensor weight;  // [num, dim]
};

// Normalizes over the trailing `normalized_shape` dims; weight 1, bias 0.
class LayerNorm : public Module {
 public:
  LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true, bool bias = true);
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool elementwise_affine = true, bool bias = true)
      : LayerNorm(Shape{dim}, eps, elementwise_affine, bias) {}
  Tensor forward(const Tensor& x) override;
  // y in `out` (layer_norm's overload): autocast_operand_dtype(x.dtype()) before a projection under autocast.
  Tensor forward(const Tensor& x, DType out);
  Shape normalized_shape;
  double eps;
  Tensor weight, bias;  // undefined when not affine / no bias
};

// x / sqrt(mean(x^2) + eps) * weight over the trailing dims; weight 1.
class RMSNorm : public Module {
 public:
  RMSNorm(Shape normalized_shape, double eps = 1e-6, bool elementwise_affine = true);
  explicit RMSNorm(int64_t dim, double eps = 1e-6, bool elementwise_affine = true)
      : RMSNorm(Shape{dim}, eps, elementwise_affine) {}
  Tensor forward(const Tensor& x) override;
  Tensor forward(const Tensor& x, DType out);  // as LayerNorm's
  Shape normalized_shape;
  double eps;
  Tensor weight;
};

// x: [N, C, *]; statistics per (sample, group of C / num_groups channels); per-channel weight 1, bias 0.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  int64_t num_groups, num_channels;
  double eps;
  Tensor weight, bias;
};

// Zeroes elements with probability p and scales the rest by 1/(1-p) in training mode; identity in eval
// mode. Draws from `gen`, which must outlive the module (default: the global generator, which the trainer
// saves and restores with each checkpoint; the library's models always use it for dropout).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  void set_generator(Generator& gen) { gen_ = &gen; }
  double p;

 private:
  Generator* gen_;
};

struct Conv2dOptions {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
  bool bias = true;
};

// x: [N, C_in, H, W] -> [N, C_out, H', W'], square kernel. Init as torch.nn.Conv2d:
// W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in / groups * k * k.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv2dOptions opt = {},
         Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  void reset_parameters(Generator& gen);
  int64_t in_channels, out_channels, kernel_size;
  Conv2dOptions options;
  Tensor weight;  // [out, in / groups, k, k]
  Tensor bias;    // [out] or undefined
};

// ---- activations as modules (for Sequential)
class GELU : public Module {
 public:
  explicit GELU(GeluApprox approx = GeluApprox::none) : Module("GELU"), approx(approx) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx); }
  GeluApprox approx;
};
class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};
class SiLU : public Module {
 public:
  SiLU() : Module("SiLU") {}
  Tensor forward(const Tensor& x) override { return silu(x); }
};
class Tanh : public Module {
 public:
  Tanh() : Module("Tanh") {}
  Tensor forward(const Tensor& x) override { return tanh(x); }
};
class Sigmoid : public Module {
 public:
  Sigmoid() : Module("Sigmoid") {}
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
};
class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};
// Flattens dims [start, end] (default: all but the batch dim).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start = 1, int64_t end = -1) : Module("Flatten"), start(start), end(end) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start, end); }
  int64_t start, end;
};
// Wraps a function (no parameters) so that it can sit in a Sequential.
class Functional : public Module {
 public:
  explicit Functional(std::function<Tensor(const Tensor&)> fn, std::string name = "Functional")
      : Module(std::move(name)), fn(std::move(fn)) {}
  Tensor forward(const Tensor& x) override { return fn(x); }
  std::function<Tensor(const Tensor&)> fn;
};

// ---- feed-forward blocks
// GELU MLP: fc2(gelu(fc1(x))), dim -> hidden -> dim.
class FeedForward : public Module {
 public:
  FeedForward(int64_t dim, int64_t hidden, bool bias = true, GeluApprox approx = GeluApprox::none,
              Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  Tensor forward(const Tensor& x, const Tensor& residual);  // residual + forward(x), the add fused under autocast
  GeluApprox approx;
  std::shared_ptr<Linear> fc1, fc2;
};

// Gated linear unit feed-forward (Shazeer 2020): down(act(gate(x)) * up(x)), dim -> hidden -> dim.
// SwiGLU uses act = silu, GeGLU act = gelu (exact), ReGLU act = relu. No biases by default (LLaMA).
enum class GLUActivation { swiglu, geglu, reglu };
class GLUFeedForward : public Module {
 public:
  GLUFeedForward(int64_t dim, int64_t hidden, GLUActivation act = GLUActivation::swiglu, bool bias = false,
                 Generator& gen = default_generator());
  Tensor forward(const Tensor& x) override;
  GLUActivation activation;
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};
class SwiGLU : public GLUFeedForward {
 public:
  SwiGLU(int64_t dim, int64_t hidden, bool bias = false, Generator& gen = default_generator())
      : GLUFeedForward(dim, hidden, GLUActivation::swiglu, bias, gen) {}
};
class GeGLU : public GLUFeedForward {
 public:
  GeGLU(int64_t dim, int64_t hidden, bool bias = false, Generator& gen = default_generator())
      : GLUFeedForward(dim, hidden, GLUActivation::geglu, bias, gen) {}
};

// ---- containers
// Children named "0", "1", ... ; forward chains them.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(modules_.size()), m);
    modules_.push_back(m);
    return m;
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return modules_.size(); }
  const std::shared_ptr<Module>& operator[](size_t i) const;
  template <class M>
  std::shared_ptr<M> at(size_t i) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[i]);
    LD_CHECK(m != nullptr, type_name(), "[", i, "] is a ", (*this)[i]->type_name(), ", not the requested type");
    return m;
  }

 protected:
  explicit Sequential(std::string type_name) : Module(std::move(type_name)) {}
  std::vector<std::shared_ptr<Module>> modules_;
};

// A list of submodules named "0", "1", ... without a forward (e.g. the blocks of a transformer).
class ModuleList : public Sequential {
 public:
  ModuleList() : Sequential(std::string("ModuleList")) {}
  Tensor forward(const Tensor& x) override;  // throws: a ModuleList is iterated, not called
  auto begin() const { return modules_.begin(); }
  auto end() const { return modules_.end(); }
};

}  // namespace liandan::nn
