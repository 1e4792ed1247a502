// tasks "vit" (a ViT with 2-D RoPE, 1-D RoPE on the flattened patches, learned or no positions),
// "mnist_cnn" (the small CNN whose features score diffusion samples) and "image_cls" (an MLP, that CNN or a
// ViT by `model.name`) on MNIST or any labelled image set given by path (apps/tasks/image_data.h, docs/data.md).
// vit also measures resolution extrapolation: accuracy on digits pasted at the centre of a larger blank
// canvas (eval.canvas), where the grid has more patches than in training.
#include <cmath>
#include <limits>

#include "apps/tasks/image_data.h"
#include "core/data/image.h"
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

// Images [N, C, S, S] pasted at the centre of a blank [N, C, size, size] canvas.
Tensor on_canvas(const Tensor& images, int64_t size) {
  int64_t s = images.size(2), off = (size - s) / 2;
  Tensor out = zeros({images.size(0), images.size(1), size, size});
  out.narrow(2, off, s).narrow(3, off, s).copy_(images);
  return out;
}

// Flatten → Linear ReLU … → Linear: the plain baseline classifier.
class MLPClassifier : public nn::Module {
 public:
  MLPClassifier(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, Generator& gen)
      : nn::Module("MLPClassifier") {
    int64_t d = inputs;
    for (size_t i = 0; i < hidden.size(); ++i) {
      layers.push_back(register_module("fc" + std::to_string(i), std::make_shared<nn::Linear>(d, hidden[i], true, gen)));
      d = hidden[i];
    }
    head = register_module("head", std::make_shared<nn::Linear>(d, classes, true, gen));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x.flatten(1);
    for (auto& l : layers) h = relu(l->forward(h));
    return head->forward(h);
  }
  std::vector<std::shared_ptr<nn::Linear>> layers;
  std::shared_ptr<nn::Linear> head;
};

enum class Kind { mlp, cnn, vit };

class MnistTask : public Task {
 public:
  // `kind_key`: image_cls picks the model by model.name; vit and mnist_cnn have theirs fixed.
  MnistTask(Config& c, const TaskContext& ctx, Kind kind, bool kind_key) : kind_(kind), ctx_(ctx), aug_gen_(ctx.seed + 17) {
    if (kind_key) {
      std::string m = c.get<std::string>("model.name", "cnn");
      if (m == "mlp") kind_ = Kind::mlp;
      else if (m == "cnn") kind_ = Kind::cnn;
      else if (m == "vit") kind_ = Kind::vit;
      else c.fail_range("model.name", "'" + m + "'", "\"mlp\", \"cnn\" or \"vit\"");
    }
    data_ = load_image_data(c, ctx, kind_key ? 0 : 28);
    test_images_ = data_.eval.images;
    batch_ = read_batch_size(c, 128, data_.train.images.size(0), "training images");
    ctx.check_batch(batch_);
    data::LoaderOptions lo{.batch_size = batch_, .shuffle = true, .drop_last = true, .seed = ctx.seed + 7};
    loader_.loader = std::make_unique<data::DataLoader>(
        std::make_shared<data::TensorDataset>(data::Batch{{{"image", data_.train.images}, {"label", data_.train.labels}}}),
        lo);
    Generator init(ctx.seed);
    if (kind_ == Kind::vit) {
      nn::ViTConfig v;  // nn::ViT's constructor checks the sizes
      v.image_size = data_.size;
      v.channels = data_.channels;
      v.n_classes = data_.n_classes;
      v.patch = c.get<int64_t>("model.patch", 4);
      v.d_model = c.get_int("model.d_model", 64, 1, int64_t(1) << 24);  // bounded here too: d_ff's default is 4 d_model
      v.n_layers = c.get<int64_t>("model.n_layers", 4);
      v.n_heads = c.get<int64_t>("model.n_heads", 4);
      v.d_ff = c.get<int64_t>("model.d_ff", 4 * v.d_model);
      v.position = vit_position(c.get<std::string>("model.position", "rope2d"), c.source());
      v.rope_base = c.get_real("model.rope_base", 100.0, 0, std::numeric_limits<double>::infinity(), true);
      v.dropout = c.get<double>("model.dropout", 0.0);
      canvases_ = c.get_ints("eval.canvas", {}, 1, 4096);
      vit_model_ = std::make_shared<nn::ViT>(v, init);
      for (int64_t s : canvases_) {  // after the ViT has checked the patch size
        if (s < data_.size) c.fail_range("eval.canvas", s, "at least the image size " + std::to_string(data_.size));
        if (s % v.patch != 0) c.fail_range("eval.canvas", s, "a multiple of the patch size " + std::to_string(v.patch));
      }
    } else if (kind_ == Kind::cnn) {
      if (data_.size % 4 != 0) c.fail_range("data.image_size", data_.size, "a multiple of 4 for the CNN (two 2x2 pools)");
      cnn_ = std::make_shared<MnistCNN>(init, data_.channels, data_.size, data_.n_classes);
    } else {
      std::vector<int64_t> hidden = c.get_ints("model.hidden", {256}, 1, int64_t(1) << 20);
      mlp_ = std::make_shared<MLPClassifier>(data_.channels * data_.size * data_.size, hidden, data_.n_classes, init);
    }
  }
  nn::Module& model() override {
    if (kind_ == Kind::vit) return *vit_model_;
    if (kind_ == Kind::cnn) return *cnn_;
    return *mlp_;
  }
  bool runs_on_devices() const override { return true; }
  std::string describe() const override {
    const char* names[] = {"MLP", "CNN", "ViT"};
    return std::string(names[int(kind_)]) + " with " +
           std::to_string(const_cast<MnistTask*>(this)->model().num_parameters()) + " parameters on " + data_.source +
           " (" + std::to_string(data_.train.images.size(0)) + " train / " + std::to_string(data_.eval.images.size(0)) +
           " eval images, " + std::to_string(data_.channels) + "x" + std::to_string(data_.size) + "x" +
           std::to_string(data_.size) + ", " + std::to_string(data_.n_classes) + " classes), batch " + std::to_string(batch_);
  }
  Tensor train_loss() override {
    // The global batch is augmented (one draw per image, whatever the sharing), then this share taken.
    data::Batch b = loader_.loader->next();
    Tensor x = data_.augment.active() ? data::augment_images(b["image"], data_.augment, aug_gen_) : b["image"];
    return losses::cross_entropy(logits(ctx_.shard(x)), ctx_.shard(b["label"]));
  }
  Metrics evaluate() override {
    auto [acc, loss] = classify_eval(test_images_, data_.eval.labels, [&](const Tensor& x) { return logits(x); });
    Metrics m{{"val_loss", loss}, {"val_accuracy", acc}};
    if (kind_ == Kind::vit && vit_model_->config.position != nn::PositionEncoding::learned)
      for (int64_t s : canvases_) {
        auto [a, l] = classify_eval(test_images_, data_.eval.labels,
                                    [&](const Tensor& x) { return vit_model_->forward(on_canvas(x, s).to(device)); }, 250);
        m.emplace_back("val_accuracy@" + std::to_string(s), a);
      }
    return m;
  }
  std::pair<std::string, bool> best_metric() const override { return {"val_accuracy", false}; }
  // Predictions on the first evaluation images: a grid PNG (row-major, as listed) and "predicted/true" lines.
  std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) override {
    int64_t n = std::min<int64_t>(32, test_images_.size(0));
    Tensor x = test_images_.narrow(0, 0, n).contiguous();
    std::vector<double> pred = argmax(logits(x).cpu(), 1).to_vector(), truth = data_.eval.labels.narrow(0, 0, n).to_vector();
    std::string path = dir + "/" + tag + "-predictions.png", line = "predicted/true:";
    int64_t right = 0;
    for (int64_t i = 0; i < n; ++i) {
      line += " " + label_name(pred[size_t(i)]) + "/" + label_name(truth[size_t(i)]);
      right += pred[size_t(i)] == truth[size_t(i)];
    }
    double lo = min(x).item(), hi = std::max(max(x).item(), lo + 1e-6);  // normalised images too
    data::save_image_grid(path, x, {.nrow = 8, .lo = lo, .hi = hi});
    return {line, std::to_string(right) + "/" + std::to_string(n) + " right; images: " + path};
  }
  // The loader's state, then (with augmentation only, so older checkpoints still resume) the augmentation
  // generator's offset (its seed is the run's).
  std::vector<int64_t> state() const override {
    std::vector<int64_t> s = loader_.state();
    if (data_.augment.active()) s.push_back(int64_t(aug_gen_.offset()));
    return s;
  }
  void set_state(const std::vector<int64_t>& s) override {
    if (!data_.augment.active()) return loader_.set_state(s);
    LD_CHECK(!s.empty(), "image task state: empty (a checkpoint of a run without augmentation?)");
    loader_.set_state({s.begin(), s.end() - 1});
    aug_gen_.set_state(aug_gen_.seed(), uint64_t(s.back()));
  }

 private:
  Tensor logits(const Tensor& x) {
    Tensor xd = x.to(device);
    return model().forward(xd);
  }

  std::string label_name(double l) const {
    size_t i = size_t(l);
    return i < data_.train.classes.size() ? data_.train.classes[i] : std::to_string(int64_t(l));
  }

  Kind kind_;
  TaskContext ctx_;
  Generator aug_gen_;
  ImageData data_;
  Tensor test_images_;
  int64_t batch_;
  LoaderState loader_;
  std::vector<int64_t> canvases_;
  std::shared_ptr<nn::ViT> vit_model_;
  std::shared_ptr<MnistCNN> cnn_;
  std::shared_ptr<MLPClassifier> mlp_;
};

TaskRegistration reg_vit("vit", "ViT on MNIST (2-D / 1-D RoPE, learned or no positions; larger-canvas evaluation)",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistTask>(c, ctx, Kind::vit, false); });
TaskRegistration reg_cnn("mnist_cnn", "small CNN on MNIST (the FID feature classifier for diffusion)",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistTask>(c, ctx, Kind::cnn, false); });
TaskRegistration reg_cls("image_cls", "image classifier (model.name = mlp | cnn | vit) on IDX files or class folders",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistTask>(c, ctx, Kind::mlp, true); });

}  // namespace
}  // namespace liandan::apps
