#include "apps/demo_mlp.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "core/ops.h"

namespace liandan::apps {

namespace {

// Three interleaved spiral arms with noise: x in R^2, label = arm. Not linearly separable, so
// the loss only falls if the hidden layers learn.
std::pair<Tensor, Tensor> make_spirals(int64_t n, Generator& gen) {
  Tensor u = rand({n}, gen, DType::f64), noise = randn({n, 2}, gen, DType::f64);
  Tensor x = empty({n, 2}), y = empty({n}, DType::i64);
  for (int64_t i = 0; i < n; ++i) {
    int64_t arm = i % 3;
    double r = u.at({i}), th = 4.0 * r + 2.0 * M_PI * double(arm) / 3.0;
    x.set({i, 0}, r * std::cos(th) + 0.03 * noise.at({i, 0}));
    x.set({i, 1}, r * std::sin(th) + 0.03 * noise.at({i, 1}));
    y.set({i}, double(arm));
  }
  return {x, y};
}

struct Layer {
  Tensor w, b;
};

Layer make_layer(int64_t in, int64_t out, Generator& gen) {
  // Kaiming-uniform-like init: U(-1/sqrt(in), 1/sqrt(in)), as torch.nn.Linear.
  double k = 1.0 / std::sqrt(double(in));
  Tensor w = rand({in, out}, gen);
  Tensor b = rand({out}, gen);
  {
    NoGradGuard ng;
    w = add(mul(w, 2 * k), -k);
    b = add(mul(b, 2 * k), -k);
  }
  w.requires_grad_();
  b.requires_grad_();
  return {w, b};
}

}  // namespace

DemoResult run_demo_mlp(const DemoOptions& opt) {
  Generator gen(opt.seed);
  auto [xs, ys] = make_spirals(3000, gen);
  std::vector<Layer> layers = {make_layer(2, opt.hidden, gen), make_layer(opt.hidden, opt.hidden, gen),
                               make_layer(opt.hidden, 3, gen)};
  std::vector<Tensor> params, velocity;
  for (auto& l : layers) for (auto* p : {&l.w, &l.b}) {
    params.push_back(*p);
    velocity.push_back(zeros(p->shape()));
  }
  auto forward = [&](const Tensor& x) {
    Tensor h = x;
    for (size_t i = 0; i < layers.size(); ++i) {
      h = add(matmul(h, layers[i].w), layers[i].b);
      if (i + 1 < layers.size()) h = gelu(h);
    }
    return h;
  };
  auto nll = [](const Tensor& logits, const Tensor& y) {
    return neg(mean(gather(log_softmax(logits, -1), 1, y.unsqueeze(1))));
  };

  DemoResult res;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= opt.steps; ++step) {
    Tensor idx = randint(0, xs.shape()[0], {opt.batch}, gen);
    Tensor x = index_select(xs, 0, idx), y = index_select(ys.to(DType::f64), 0, idx).to(DType::i64);
    Tensor loss = nll(forward(x), y);
    for (auto& p : params) p.set_grad(Tensor());
    loss.backward();
    double l = loss.item();
    LD_CHECK(std::isfinite(l), "train: loss is ", l, " at step ", step);
    if (step == 1) res.first_loss = l;
    {
      NoGradGuard ng;  // SGD with momentum: v = m v + g; p -= lr v
      for (size_t i = 0; i < params.size(); ++i) {
        velocity[i].mul_(opt.momentum).add_(params[i].grad());
        params[i].add_(velocity[i], -opt.lr);
      }
    }
    if (step % opt.log_every == 0 || step == 1) spdlog::info("step {:5d}  loss {:.4f}", step, l);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  NoGradGuard ng;
  Tensor logits = forward(xs);
  res.final_loss = nll(logits, ys).item();
  res.final_accuracy = mean(eq(argmax(logits, 1).to(DType::f32), ys.to(DType::f32))).item();
  return res;
}

}  // namespace liandan::apps
