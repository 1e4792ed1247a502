// task "spirals": an MLP classifier on three generated spiral arms — a seconds-long task that exercises
// the whole trainer (tests use it for resume, divergence and config errors).
#include <cmath>
#include <numbers>

#include "apps/task.h"
#include "core/data/loader.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "losses/losses.h"
#include "nn/layers.h"

namespace liandan::apps {
namespace {

constexpr int64_t kMaxPoints = 10'000'000;  // per split: 80 MB of points

// Three interleaved arms with noise: x ∈ R², label = arm. Not linearly separable, so the loss only falls
// if the hidden layers learn.
std::pair<Tensor, Tensor> make_spirals(int64_t n, double noise, Generator& gen) {
  std::vector<double> u = rand({n}, gen, DType::f64).to_vector(), e = randn({n, 2}, gen, DType::f64).to_vector();
  std::vector<float> x(static_cast<size_t>(2 * n));
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t arm = i % 3;
    double r = u[size_t(i)], th = 4.0 * r + 2.0 * std::numbers::pi * double(arm) / 3.0;
    x[size_t(2 * i)] = float(r * std::cos(th) + noise * e[size_t(2 * i)]);
    x[size_t(2 * i + 1)] = float(r * std::sin(th) + noise * e[size_t(2 * i + 1)]);
    y[size_t(i)] = arm;
  }
  return {from_vector(x, {n, 2}), from_vector(y, {n})};
}

class SpiralsTask : public Task {
 public:
  SpiralsTask(Config& c, const TaskContext& ctx) : ctx_(ctx), gen_(ctx.seed + 1) {
    Generator data_gen(ctx.seed + 1000);
    // Bounds: the arms have radius 1 (more noise than 100 is nonsense), and larger sizes would exhaust memory.
    double noise = c.get_real("data.noise", 0.03, 0, 100);
    std::tie(x_, y_) = make_spirals(c.get_int("data.train_size", 3000, 1, kMaxPoints), noise, data_gen);
    std::tie(vx_, vy_) = make_spirals(c.get_int("data.val_size", 1500, 1, kMaxPoints), noise, data_gen);
    batch_ = c.get_int("batch_size", 256, 1, kMaxPoints);
    ctx.check_batch(batch_);
    int64_t hidden = c.get_int("model.hidden", 128, 1, 1 << 16), depth = c.get_int("model.layers", 2, 1, 1024);
    Generator init(ctx.seed);
    model_ = std::make_shared<nn::Sequential>();
    int64_t in = 2;
    for (int64_t l = 0; l < depth; ++l) {
      model_->push_back(std::make_shared<nn::Linear>(in, hidden, true, init));
      model_->push_back(std::make_shared<nn::GELU>());
      in = hidden;
    }
    model_->push_back(std::make_shared<nn::Linear>(in, 3, true, init));
  }
  nn::Module& model() override { return *model_; }
  bool runs_on_devices() const override { return true; }
  std::string describe() const override {
    return "MLP " + std::to_string(model_->num_parameters()) + " parameters on 3-arm spirals (" +
           std::to_string(x_.size(0)) + " train / " + std::to_string(vx_.size(0)) + " val points)";
  }
  Tensor train_loss() override {
    std::vector<int64_t> idx;
    for (double i : randint(0, x_.size(0), {batch_}, gen_).to_vector()) idx.push_back(int64_t(i));
    idx = ctx_.shard(idx);  // every rank draws the global batch, keeps its rows
    return losses::cross_entropy(model_->forward(data::gather_rows(x_, idx).to(device)), data::gather_rows(y_, idx));
  }
  Metrics evaluate() override {
    Tensor logits = model_->forward(vx_.to(device));
    double acc = mean(eq(argmax(logits.cpu(), 1).to(DType::f32), vy_.to(DType::f32))).item();
    return {{"val_loss", losses::cross_entropy(logits, vy_).item()}, {"val_accuracy", acc}};
  }
  std::pair<std::string, bool> best_metric() const override { return {"val_accuracy", false}; }
  std::vector<int64_t> state() const override { return {int64_t(gen_.seed()), int64_t(gen_.offset())}; }
  void set_state(const std::vector<int64_t>& s) override {
    LD_CHECK(s.size() == 2, "spirals: task state must hold 2 integers, got ", s.size());
    gen_.set_state(uint64_t(s[0]), uint64_t(s[1]));
  }

 private:
  TaskContext ctx_;
  Generator gen_;
  Tensor x_, y_, vx_, vy_;
  int64_t batch_;
  std::shared_ptr<nn::Sequential> model_;
};

TaskRegistration reg("spirals", "MLP classifier on generated 3-arm spirals (seconds; the smoke test)",
                     [](Config& c, const TaskContext& ctx) { return std::make_unique<SpiralsTask>(c, ctx); });

}  // namespace
}  // namespace liandan::apps
