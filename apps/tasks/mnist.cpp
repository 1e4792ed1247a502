// tasks "vit" (a ViT with 2-D RoPE, 1-D RoPE on the flattened patches, learned or no positions) and
// "mnist_cnn" (the small CNN whose features score diffusion samples) on MNIST.
// vit also measures resolution extrapolation: accuracy on digits pasted at the centre of a larger blank
// canvas (eval.canvas), where the grid has more patches than in training.
#include <cmath>
#include <limits>

#include "apps/tasks/mnist_common.h"
#include "nn/models.h"

namespace liandan::apps {
namespace {

nn::PositionEncoding vit_position(const std::string& s, const std::string& source) {
  if (s == "rope2d") return nn::PositionEncoding::rope2d;
  if (s == "rope1d") return nn::PositionEncoding::rope1d;
  if (s == "learned") return nn::PositionEncoding::learned;
  if (s == "none") return nn::PositionEncoding::none;
  LD_FAIL("config ", source, ": 'model.position' must be rope2d, rope1d, learned or none; got '", s, "'");
}

// Images [N, 1, 28, 28] pasted at the centre of a blank [N, 1, size, size] canvas.
Tensor on_canvas(const Tensor& images, int64_t size) {
  int64_t off = (size - 28) / 2;
  Tensor out = zeros({images.size(0), 1, size, size});
  out.narrow(2, off, 28).narrow(3, off, 28).copy_(images);
  return out;
}

class MnistTask : public Task {
 public:
  MnistTask(Config& c, const TaskContext& ctx, bool vit) : vit_(vit) {
    int64_t limit = c.get_int("data.train_limit", 0, 0);  // 0: all
    data_ = load_mnist_splits(ctx.data_dir, limit);
    test_images_ = data_.test.images.unsqueeze(1).contiguous();
    batch_ = read_batch_size(c, 128, data_.train.images.size(0), "training images");
    ctx.check_batch(batch_);
    data::LoaderOptions lo{.batch_size = batch_, .shuffle = true, .drop_last = true, .seed = ctx.seed + 7,
                           .shard_rank = ctx.rank, .shard_count = ctx.world};
    loader_.loader = std::make_unique<data::DataLoader>(data::mnist_dataset(data_.train), lo);
    Generator init(ctx.seed);
    if (vit_) {
      nn::ViTConfig v;  // nn::ViT's constructor checks the sizes
      v.patch = c.get<int64_t>("model.patch", 4);
      v.d_model = c.get_int("model.d_model", 64, 1, int64_t(1) << 24);  // bounded here too: d_ff's default is 4 d_model
      v.n_layers = c.get<int64_t>("model.n_layers", 4);
      v.n_heads = c.get<int64_t>("model.n_heads", 4);
      v.d_ff = c.get<int64_t>("model.d_ff", 4 * v.d_model);
      v.position = vit_position(c.get<std::string>("model.position", "rope2d"), c.source());
      v.rope_base = c.get_real("model.rope_base", 100.0, 0, std::numeric_limits<double>::infinity(), true);
      v.dropout = c.get<double>("model.dropout", 0.0);
      canvases_ = c.get_ints("eval.canvas", {}, 28, 4096);
      vit_model_ = std::make_shared<nn::ViT>(v, init);
      for (int64_t s : canvases_)  // after the ViT has checked the patch size
        if (s % v.patch != 0) c.fail_range("eval.canvas", s, "a multiple of the patch size " + std::to_string(v.patch));
    } else {
      cnn_ = std::make_shared<MnistCNN>(init);
    }
  }
  nn::Module& model() override { return vit_ ? static_cast<nn::Module&>(*vit_model_) : *cnn_; }
  bool runs_on_devices() const override { return true; }
  std::string describe() const override {
    return std::string(vit_ ? "ViT" : "CNN") + " with " +
           std::to_string(const_cast<MnistTask*>(this)->model().num_parameters()) + " parameters on MNIST (" +
           std::to_string(data_.train.images.size(0)) + " train / " + std::to_string(data_.test.images.size(0)) +
           " test images), batch " + std::to_string(batch_);
  }
  Tensor train_loss() override {
    data::Batch b = loader_.loader->next();
    return losses::cross_entropy(logits(b["image"]), b["label"]);
  }
  Metrics evaluate() override {
    auto [acc, loss] = classify_eval(test_images_, data_.test.labels, [&](const Tensor& x) { return logits(x); });
    Metrics m{{"val_loss", loss}, {"val_accuracy", acc}};
    if (vit_ && vit_model_->config.position != nn::PositionEncoding::learned)
      for (int64_t s : canvases_) {
        auto [a, l] = classify_eval(test_images_, data_.test.labels,
                                    [&](const Tensor& x) { return vit_model_->forward(on_canvas(x, s).to(device)); }, 250);
        m.emplace_back("val_accuracy@" + std::to_string(s), a);
      }
    return m;
  }
  std::pair<std::string, bool> best_metric() const override { return {"val_accuracy", false}; }
  std::vector<int64_t> state() const override { return loader_.state(); }
  void set_state(const std::vector<int64_t>& s) override { loader_.set_state(s); }

 private:
  Tensor logits(const Tensor& x) {
    Tensor xd = x.to(device);
    return vit_ ? vit_model_->forward(xd) : cnn_->forward(xd);
  }

  bool vit_;
  MnistSplits data_;
  Tensor test_images_;
  int64_t batch_;
  LoaderState loader_;
  std::vector<int64_t> canvases_;
  std::shared_ptr<nn::ViT> vit_model_;
  std::shared_ptr<MnistCNN> cnn_;
};

TaskRegistration reg_vit("vit", "ViT on MNIST (2-D / 1-D RoPE, learned or no positions; larger-canvas evaluation)",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistTask>(c, ctx, true); });
TaskRegistration reg_cnn("mnist_cnn", "small CNN on MNIST (the FID feature classifier for diffusion)",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistTask>(c, ctx, false); });

}  // namespace
}  // namespace liandan::apps
