// tasks "multilabel" and "nxm" on composite multi-digit MNIST (core/data/composite.h).
//   multilabel: which digits are on the canvas? loss = zlpr (hard targets), zlpr_soft (targets = visible
//               fraction of each digit) or bce (per-label sigmoid cross-entropy, the baseline; hard or soft
//               targets). Metrics: micro/macro F1 and exact match on hard labels (threshold 0 for ZLPR's
//               logits, i.e. σ(2s) > ½; the BCE baseline thresholds σ(s) > ½, also logit 0).
//   nxm:        the digits left to right as n m-way problems (n = digits, m = 10); loss = nxm1 / nxm3 (the
//               article's) or ce (n independent softmax cross-entropies, the baseline). Metrics: per-position
//               and whole-sequence accuracy.
// Both use the same CNN backbone on the canvas (conv 32-64-128 with pooling, then a linear head).
#include "apps/tasks/mnist_common.h"
#include "core/data/composite.h"
#include "losses/metrics.h"

namespace liandan::apps {
namespace {

class CanvasNet : public nn::Module {
 public:
  CanvasNet(int64_t h, int64_t w, int64_t outputs, Generator& gen) : nn::Module("CanvasNet") {
    c1 = register_module("conv1", std::make_shared<nn::Conv2d>(1, 32, 3, nn::Conv2dOptions{.padding = 1}, gen));
    c2 = register_module("conv2", std::make_shared<nn::Conv2d>(32, 64, 3, nn::Conv2dOptions{.padding = 1}, gen));
    c3 = register_module("conv3", std::make_shared<nn::Conv2d>(64, 128, 3, nn::Conv2dOptions{.padding = 1}, gen));
    fc = register_module("fc", std::make_shared<nn::Linear>(128 * (h / 8) * (w / 8), 256, true, gen));
    head = register_module("head", std::make_shared<nn::Linear>(256, outputs, true, gen));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = avg_pool2d(relu(c1->forward(x)), 2);
    h = avg_pool2d(relu(c2->forward(h)), 2);
    h = avg_pool2d(relu(c3->forward(h)), 2);
    return head->forward(relu(fc->forward(h.flatten(1))));
  }
  std::shared_ptr<nn::Conv2d> c1, c2, c3;
  std::shared_ptr<nn::Linear> fc, head;
};

class CompositeTask : public Task {
 public:
  CompositeTask(Config& c, const TaskContext& ctx, bool nxm) : nxm_(nxm), ctx_(ctx) {
    MnistSplits mn = load_mnist_splits(ctx.data_dir);
    data::CompositeOptions o;
    // Bounds: the canvas holds 28x28 digits and the CNN pools by 8; beyond these, sizes are nonsense.
    o.height = c.get_int("data.height", nxm ? 32 : 56, 28, 4096);
    o.width = c.get_int("data.width", nxm ? 88 : 56, 28, 4096);
    o.min_digits = c.get_int("data.min_digits", nxm ? 3 : 1, 1, 64);
    o.max_digits = c.get_int("data.max_digits", 3, 1, 64);
    o.min_gap = c.get_int("data.min_gap", nxm ? 20 : 0, 0, 4096);
    o.class_probs = data::imbalanced_class_probs(c.get_real("data.imbalance", 1.0, 1, 1e6));
    o.size = c.get_int("data.train_size", 20000, 1, 10'000'000);
    o.seed = ctx.seed + 11;
    LD_CHECK(o.height % 8 == 0 && o.width % 8 == 0, "config ", c.source(),
             ": 'data.height' and 'data.width' must be multiples of 8, got ", o.height, " and ", o.width);
    LD_CHECK(o.min_digits <= o.max_digits, "config ", c.source(), ": 'data.min_digits' ", o.min_digits,
             " is larger than 'data.max_digits' ", o.max_digits);
    LD_CHECK(!nxm || o.min_digits == o.max_digits, "config ", c.source(), ": nxm needs data.min_digits == data.max_digits");
    n_ = o.max_digits;
    train_ = std::make_shared<data::CompositeDigits>(mn.train.images, mn.train.labels, o);
    data::CompositeOptions t = o;
    t.size = c.get_int("data.test_size", 2000, 1, 65536);  // evaluated in one batch
    t.seed = ctx.seed + 12;
    test_ = std::make_shared<data::CompositeDigits>(mn.test.images, mn.test.labels, t);  // unseen digits
    loss_ = c.get<std::string>("loss.name", nxm ? "nxm1" : "zlpr");
    soft_ = c.get<bool>("loss.soft", loss_ == "zlpr_soft");
    if (nxm)
      LD_CHECK(loss_ == "nxm1" || loss_ == "nxm3" || loss_ == "ce", "config ", c.source(),
               ": 'loss.name' for nxm must be nxm1, nxm3 or ce; got '", loss_, "'");
    else
      LD_CHECK(loss_ == "zlpr" || loss_ == "zlpr_soft" || loss_ == "bce", "config ", c.source(),
               ": 'loss.name' for multilabel must be zlpr, zlpr_soft or bce; got '", loss_, "'");
    batch_ = read_batch_size(c, 64, o.size, "composite training examples (data.train_size)");
    ctx.check_batch(batch_);
    loader_.loader = std::make_unique<data::DataLoader>(
        train_, data::LoaderOptions{.batch_size = batch_, .shuffle = true, .drop_last = true, .seed = ctx.seed + 13});
    Generator init(ctx.seed);
    net_ = std::make_shared<CanvasNet>(o.height, o.width, nxm ? n_ * 10 : 10, init);
    desc_ = std::to_string(o.min_digits) + "-" + std::to_string(o.max_digits) + " digits on " + std::to_string(o.height) +
            "x" + std::to_string(o.width) + ", loss " + loss_ + (soft_ ? " (soft targets)" : "");
  }

  nn::Module& model() override { return *net_; }
  std::string describe() const override {
    return "CNN " + std::to_string(net_->num_parameters()) + " parameters; " + desc_ + "; batch " + std::to_string(batch_);
  }
  Tensor train_loss() override {
    data::Batch b = loader_.next(ctx_);
    return loss(net_->forward(b["image"].to(device)), b);
  }
  Metrics evaluate() override {
    std::vector<int64_t> all(size_t(test_->size()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    data::Batch b = test_->get(all);
    Tensor out = net_->forward(b["image"].to(device));
    Metrics m{{"val_loss", loss(out, b).item()}};
    if (nxm_) {
      auto acc = metrics::nxm_accuracy(out.view({out.size(0), n_, 10}), b["sequence"]);
      m.emplace_back("val_position_accuracy", acc.mean_task);
      m.emplace_back("val_sequence_accuracy", acc.whole_example);
    } else {
      auto f1 = metrics::multilabel_f1(out, b["multi_hot"]);
      m.emplace_back("val_micro_f1", f1.micro);
      m.emplace_back("val_macro_f1", f1.macro);
      m.emplace_back("val_exact_match", metrics::multilabel_exact_match(out, b["multi_hot"]));
    }
    return m;
  }
  std::pair<std::string, bool> best_metric() const override {
    return {nxm_ ? "val_sequence_accuracy" : "val_micro_f1", false};
  }
  // Images go to the device; targets stay on the host (the losses move what they need, metrics read back).
  bool runs_on_devices() const override { return true; }
  std::vector<int64_t> state() const override { return loader_.state(); }
  void set_state(const std::vector<int64_t>& s) override { loader_.set_state(s); }

 private:
  Tensor loss(const Tensor& out, const data::Batch& b) {
    if (nxm_) {
      Tensor s = out.view({out.size(0), n_, 10});
      const Tensor& y = b["sequence"];
      if (loss_ == "nxm1") return losses::nxm_loss1(s, y);
      if (loss_ == "nxm3") return losses::nxm_loss3(s, y);
      return losses::cross_entropy(s.reshape({-1, 10}), y.reshape({-1})) * double(n_);  // Σ over positions
    }
    const Tensor& t = soft_ ? b["soft"] : b["multi_hot"];
    if (loss_ == "bce") return losses::binary_cross_entropy_with_logits(out, t) * 10.0;  // Σ over labels
    return soft_ ? losses::zlpr_soft(out, t) : losses::zlpr(out, t);
  }

  bool nxm_, soft_;
  int64_t n_, batch_;
  std::string loss_, desc_;
  std::shared_ptr<data::CompositeDigits> train_, test_;
  LoaderState loader_;
  TaskContext ctx_;
  std::shared_ptr<CanvasNet> net_;
};

TaskRegistration reg_ml("multilabel", "which digits are on a composite MNIST canvas: ZLPR / soft ZLPR / BCE",
                        [](Config& c, const TaskContext& ctx) { return std::make_unique<CompositeTask>(c, ctx, false); });
TaskRegistration reg_nxm("nxm", "digit sequences as n m-way problems: the n×m loss vs n softmax cross-entropies",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<CompositeTask>(c, ctx, true); });

}  // namespace
}  // namespace liandan::apps
