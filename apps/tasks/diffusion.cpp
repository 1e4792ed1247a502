// tasks "toy2d" (an MLP denoiser on 2-D toy data) and "ddpm" (a U-Net on MNIST): diffusion models trained
// with the DDPM objective (discrete process) or denoising score matching (VP / sub-VP / VE SDE), sampled by
// every sampler of diffusion/samplers.h.
//
// One trained network serves every sampler, as in score_sde: a model trained on the discrete linear DDPM
// schedule (label = index 0…999) is also the ε-model of the VP SDE (β 0.1→20) with label 999·t, so the SDE and
// ODE samplers can run on it. Sampler specs (config sample.sampler, eval.samplers):
//   ddpm:STEPS  ddpm_tilde:STEPS  ddim:STEPS[:ETA]  ddim_quad:STEPS[:ETA]  em:N  rd:N  pc:N
//   ode_euler:STEPS  ode_heun:STEPS  ode_rk45
// Held-out metrics: the loss on a fixed batch, and per sampler spec the sample quality — FID on the features
// of a liandan-trained MNIST CNN (ddpm; eval.classifier) or sliced Wasserstein-1 to fresh data (toy2d) — and
// the ODE's number of function evaluations.
#include <cmath>
#include <filesystem>
#include <sstream>

#include "apps/tasks/image_data.h"
#include "core/autograd.h"
#include "core/data/image.h"
#include "core/data/toy2d.h"
#include "core/serialize.h"
#include "diffusion/mlp_denoiser.h"
#include "diffusion/objectives.h"
#include "diffusion/samplers.h"
#include "diffusion/unet.h"
#include "losses/metrics.h"

namespace liandan::apps {
namespace {

namespace fs = std::filesystem;
using namespace liandan::diffusion;

struct SamplerSpec {
  std::string kind;
  int64_t steps = 0;
  double eta = 0;
};

constexpr int64_t kMaxSamplerSteps = int64_t(1) << 20;

SamplerSpec parse_spec(const std::string& s) {
  SamplerSpec spec;
  std::stringstream ss(s);
  std::string part;
  std::vector<std::string> parts;
  while (std::getline(ss, part, ':')) parts.push_back(part);
  LD_CHECK(!parts.empty(), "sampler spec '", s, "' is empty");
  spec.kind = parts[0];
  static const std::vector<std::string> kinds = {"ddpm", "ddpm_tilde", "ddim", "ddim_quad", "em", "rd", "pc",
                                                 "ode_euler", "ode_heun", "ode_rk45"};
  LD_CHECK(std::find(kinds.begin(), kinds.end(), spec.kind) != kinds.end(), "sampler spec '", s,
           "': unknown sampler (ddpm, ddpm_tilde, ddim, ddim_quad, em, rd, pc, ode_euler, ode_heun, ode_rk45)");
  LD_CHECK(parts.size() <= 3, "sampler spec '", s, "': expected NAME:STEPS[:ETA]");
  try {
    size_t used = 0;
    if (parts.size() > 1) {
      spec.steps = std::stoll(parts[1], &used);
      LD_CHECK(used == parts[1].size(), "");
    }
    if (parts.size() > 2) {
      spec.eta = std::stod(parts[2], &used);
      LD_CHECK(used == parts[2].size(), "");
    }
  } catch (...) {
    LD_FAIL("sampler spec '", s, "': expected NAME:STEPS[:ETA] (an integer, a number)");
  }
  LD_CHECK(spec.kind == "ode_rk45" || spec.steps >= 1, "sampler spec '", s, "' needs a step count (NAME:STEPS)");
  LD_CHECK(spec.steps <= kMaxSamplerSteps, "sampler spec '", s, "': more than ", kMaxSamplerSteps, " steps");
  LD_CHECK(std::isfinite(spec.eta) && spec.eta >= 0, "sampler spec '", s, "': eta must be a finite number >= 0");
  return spec;
}

// The diffusion process a task trains on.
struct ProcessSet {
  std::string name;                    // ddpm | ddpm_cosine | vp | subvp | ve
  std::unique_ptr<DiscreteSchedule> discrete;
  std::unique_ptr<SDE> sde;            // the training SDE, or the VP SDE matching the linear DDPM schedule
  bool train_discrete() const { return name == "ddpm" || name == "ddpm_cosine"; }
};

ProcessSet make_process(Config& c) {
  ProcessSet p;
  p.name = c.get<std::string>("diffusion.process", "ddpm");
  // The schedules and SDEs check their parameters (an error naming them); the number of steps is bounded here.
  int64_t T = c.get_int("diffusion.T", 1000, 2, int64_t(1) << 20);
  if (p.name == "ddpm") {
    p.discrete = std::make_unique<DiscreteSchedule>(DiscreteSchedule::linear(T, c.get<double>("diffusion.beta_start", 1e-4),
                                                                            c.get<double>("diffusion.beta_end", 0.02)));
    // β_i = β_min/N + i/(N−1)·(β_max−β_min)/N: the VP SDE whose discretisation is this schedule.
    p.sde = std::make_unique<VPSDE>(p.discrete->beta(0) * double(T), p.discrete->beta(T - 1) * double(T));
  } else if (p.name == "ddpm_cosine") {
    p.discrete = std::make_unique<DiscreteSchedule>(DiscreteSchedule::cosine(T));
  } else if (p.name == "vp" || p.name == "subvp") {
    // Bounds: score_sde's β_max is 20; noise levels past these overflow the f32 data's arithmetic.
    double lo = c.get_real("diffusion.beta_min", 0.1, 0, 1e4), hi = c.get_real("diffusion.beta_max", 20.0, 0, 1e4);
    if (p.name == "vp") p.sde = std::make_unique<VPSDE>(lo, hi);
    else p.sde = std::make_unique<SubVPSDE>(lo, hi);
  } else if (p.name == "ve") {
    p.sde = std::make_unique<VESDE>(c.get_real("diffusion.sigma_min", 0.01, 0, 1e6, true),
                                    c.get_real("diffusion.sigma_max", 50.0, 0, 1e6, true));
  } else {
    LD_FAIL("config ", c.source(), ": 'diffusion.process' must be ddpm, ddpm_cosine, vp, subvp or ve; got '", p.name, "'");
  }
  return p;
}

Prediction parse_prediction(const std::string& s, const std::string& source) {
  if (s == "eps") return Prediction::eps;
  if (s == "x0") return Prediction::x0;
  if (s == "v") return Prediction::v;
  LD_FAIL("config ", source, ": 'diffusion.prediction' must be eps, x0 or v; got '", s, "'");
}

// A diffusion task over any network M with forward(x, t).
template <class M>
class DiffusionTask : public Task {
 public:
  // ---- the common part: process, objective, samplers
  void setup_common(Config& c, const TaskContext& ctx) {
    proc_ = make_process(c);
    pred_ = parse_prediction(c.get<std::string>("diffusion.prediction", "eps"), c.source());
    time_scale_ = c.get_real("diffusion.time_scale", 999.0, 0, 1e12, true);  // SDE label = time_scale·t
    sample_spec_ = c.get<std::string>("sample.sampler", "ddim:50");
    sample_count_ = c.get_int("sample.count", 64, 1, 65536);
    clip_ = c.get<bool>("sample.clip", clip_default_);
    eval_specs_ = c.get<std::vector<std::string>>("eval.samplers", {});
    eval_samples_ = c.get_int("eval.samples", 256, 1, 1 << 20);
    eval_seed_ = uint64_t(c.get<int64_t>("eval.seed", 4242));  // the samplers' generator seed in evaluations
    batch_ = c.get_int("batch_size", 64, 1, 1 << 20);
    ctx.check_batch(batch_);
    ctx_ = ctx;
    // Sampling comes at evaluations and at the end: the specs are checked against the process now.
    check_spec(c, "sample.sampler", sample_spec_);
    for (auto& s : eval_specs_) check_spec(c, "eval.samplers", s);
    gen_.set_state(ctx.seed + 1, 0);
  }

  // A sampler spec that parses and that the process can run (discrete samplers: a discrete schedule and at
  // most T steps; SDE samplers: an SDE and at least 2 steps).
  void check_spec(Config& c, const char* key, const std::string& text) {
    SamplerSpec spec;
    try {
      spec = parse_spec(text);
      if (is_discrete(spec.kind)) {
        LD_CHECK(proc_.discrete, "needs a discrete schedule (diffusion.process ddpm or ddpm_cosine)");
        LD_CHECK(spec.steps <= proc_.discrete->num_steps(), "has more steps than diffusion.T = ",
                 proc_.discrete->num_steps());
      } else {
        LD_CHECK(proc_.sde, "needs an SDE (diffusion.process ddpm, vp, subvp or ve)");
        if (spec.kind.rfind("ode_", 0) != 0) LD_CHECK(spec.steps >= 2, "needs at least 2 steps");
      }
    } catch (const Error& e) {
      LD_FAIL("config ", c.source(), ": '", key, "' = '", text, "': ", e.what());
    }
  }
  static bool is_discrete(const std::string& kind) {
    return kind == "ddpm" || kind == "ddpm_tilde" || kind == "ddim" || kind == "ddim_quad";
  }

  // The denoiser for a sampler family: discrete samplers see indices, SDE samplers continuous time.
  Tensor sample(const std::string& spec_text, int64_t n, uint64_t seed, int64_t* nfe) {
    SamplerSpec spec = parse_spec(spec_text);
    Generator g(seed);
    Shape shape = sample_shape(n);
    if (is_discrete(spec.kind)) {
      LD_CHECK(proc_.discrete, "sampler ", spec_text, " needs a discrete schedule (diffusion.process ddpm)");
      ModuleDenoiser<M> d(net_, pred_, 1.0);
      if (nfe) *nfe = spec.steps;
      if (spec.kind == "ddpm" || spec.kind == "ddpm_tilde")
        return ddpm_sample(d, *proc_.discrete, shape, spec.steps, g,
                           DDPMOptions{.variance = spec.kind == "ddpm" ? DDPMVariance::beta : DDPMVariance::beta_tilde,
                                       .clip_x0 = clip_, .device = device}).cpu();
      return ddim_sample(d, *proc_.discrete, shape, spec.steps, g,
                         DDIMOptions{.eta = spec.eta, .spacing = spec.kind == "ddim" ? Spacing::uniform : Spacing::quadratic,
                                     .clip_x0 = clip_, .device = device}).cpu();
    }
    LD_CHECK(proc_.sde, "sampler ", spec_text, " needs an SDE (diffusion.process ddpm, vp, subvp or ve)");
    // A discretely trained network takes labels 0…T−1: label = time_scale·t with time_scale = T−1.
    ModuleDenoiser<M> d(net_, pred_, time_scale_);
    if (spec.kind.rfind("ode_", 0) == 0) {
      ODEMethod m = spec.kind == "ode_euler" ? ODEMethod::euler : spec.kind == "ode_heun" ? ODEMethod::heun : ODEMethod::rk45;
      ODEResult r = pf_ode_sample(d, *proc_.sde, shape, spec.steps, g,
                                  ODEOptions{.method = m, .clip_x0 = clip_, .device = device});
      if (nfe) *nfe = r.nfe;
      return r.x.cpu();
    }
    SDEOptions o{.clip_x0 = clip_, .device = device};
    if (nfe) *nfe = spec.steps * (spec.kind == "pc" ? 2 : 1);
    if (spec.kind == "em") return euler_maruyama_sample(d, *proc_.sde, shape, spec.steps, g, o).cpu();
    if (spec.kind == "rd") return reverse_diffusion_sample(d, *proc_.sde, shape, spec.steps, g, o).cpu();
    return pc_sample(d, *proc_.sde, shape, spec.steps, g, o).cpu();
  }

  // Samples come back to the host (metrics and image files read them there); batches go to the device.
  // The training loss of this rank's rows. Data-parallel, each rank draws its noise and times from its own
  // stretch of gen_'s counter (every rank advances gen_ alike), so the ranks' draws are independent and the
  // checkpointed state is the same on all of them; one process draws from gen_ directly.
  Tensor train_loss_of(const Tensor& x0_host) {
    if (ctx_.whole()) return loss_of(x0_host, gen_);
    constexpr uint64_t kBlocksPerStep = uint64_t(1) << 32;
    uint64_t base = gen_.reserve(kBlocksPerStep);
    Generator g;
    const TaskContext::Share& sh = *ctx_.share;
    g.set_state(gen_.seed(), base + uint64_t(sh.index) * (kBlocksPerStep / uint64_t(sh.count)));
    return loss_of(x0_host, g);
  }

  Tensor loss_of(const Tensor& x0_host, Generator& g) {
    Tensor x0 = x0_host.to(device);
    if (proc_.train_discrete()) {
      ModuleDenoiser<M> d(net_, pred_, 1.0);
      return ddpm_loss(d, *proc_.discrete, x0, g);
    }
    ModuleDenoiser<M> d(net_, pred_, time_scale_);
    return dsm_loss(d, *proc_.sde, x0, g);
  }

  nn::Module& model() override { return *net_; }
  bool runs_on_devices() const override { return true; }
  std::vector<int64_t> state() const override { return {int64_t(gen_.seed()), int64_t(gen_.offset())}; }
  void set_state_gen(const std::vector<int64_t>& s, size_t at) {
    LD_CHECK(s.size() >= at + 2, "diffusion task: task state too short");
    gen_.set_state(uint64_t(s[at]), uint64_t(s[at + 1]));
  }
  // Loss on a fixed batch with fixed timesteps and noise: comparable across evaluations.
  double fixed_loss(const Tensor& x0) {
    Generator g(777);
    return loss_of(x0, g).item();
  }

 protected:
  virtual Shape sample_shape(int64_t n) const = 0;

  ProcessSet proc_;
  Prediction pred_ = Prediction::eps;
  double time_scale_ = 999.0;
  std::string sample_spec_;
  std::vector<std::string> eval_specs_;
  int64_t sample_count_ = 64, eval_samples_ = 256, batch_ = 64;
  uint64_t eval_seed_ = 4242;
  bool clip_ = false, clip_default_ = false;
  Generator gen_;
  TaskContext ctx_;
  std::shared_ptr<M> net_;
};

// ---------------------------------------------------------------- toy2d

// A density image of 2-D points in [−lim, lim]²: white background, darker where denser.
void save_density(const std::string& path, const Tensor& pts, double lim) {
  const int64_t S = 256;
  std::vector<double> counts(size_t(S * S), 0.0);
  std::vector<double> v = pts.to_vector();
  for (size_t i = 0; i + 1 < v.size(); i += 2) {
    int64_t x = int64_t((v[i] + lim) / (2 * lim) * double(S)), y = int64_t((lim - v[i + 1]) / (2 * lim) * double(S));
    if (x >= 0 && x < S && y >= 0 && y < S) counts[size_t(y * S + x)] += 1;
  }
  double mx = *std::max_element(counts.begin(), counts.end());
  data::Image img(S, S, 1, 255);
  for (int64_t i = 0; i < S * S; ++i)
    img.pixels[size_t(i)] = uint8_t(255 - std::lround(255 * std::sqrt(counts[size_t(i)] / std::max(mx, 1.0))));
  data::write_png(path, img);
}

class Toy2dTask : public DiffusionTask<MLPDenoiser> {
 public:
  Toy2dTask(Config& c, const TaskContext& ctx) {
    setup_common(c, ctx);
    dataset_ = c.get<std::string>("data.dataset", "ring");
    LD_CHECK(dataset_ == "ring" || dataset_ == "grid" || dataset_ == "moons" || dataset_ == "swiss_roll", "config ",
             c.source(), ": 'data.dataset' must be ring, grid, moons or swiss_roll; got '", dataset_, "'");
    Generator dg(ctx.seed + 100);
    train_ = data::toy2d(dataset_, c.get_int("data.train_size", 20000, 1, 10'000'000), dg);
    val_ = data::toy2d(dataset_, eval_samples_, dg);
    MLPDenoiserConfig m{.dim = 2,
                        .hidden = c.get<int64_t>("model.hidden", 128),
                        .blocks = c.get<int64_t>("model.blocks", 3),
                        .time_dim = c.get<int64_t>("model.time_dim", 64)};
    Generator init(ctx.seed);
    net_ = std::make_shared<MLPDenoiser>(m, init);
  }
  std::string describe() const override {
    return "MLP denoiser " + std::to_string(net_->num_parameters()) + " parameters on 2-D " + dataset_ + " (" +
           std::to_string(train_.size(0)) + " points), process " + proc_.name;
  }
  Tensor train_loss() override {
    std::vector<int64_t> idx;
    for (double i : randint(0, train_.size(0), {batch_}, gen_).to_vector()) idx.push_back(int64_t(i));
    return train_loss_of(data::gather_rows(train_, ctx_.shard(idx)));
  }
  Metrics evaluate() override {
    Metrics m{{"val_loss", fixed_loss(val_)}};
    for (auto& spec : eval_specs_) {
      int64_t nfe = 0;
      Tensor x = sample(spec, val_.size(0), eval_seed_, &nfe).to(DType::f64);
      Generator pg(9);
      m.emplace_back(spec + "/sw1", metrics::sliced_wasserstein(x, val_.to(DType::f64), 64, pg));
      if (spec.rfind("ode_rk45", 0) == 0) m.emplace_back(spec + "/nfe", double(nfe));
    }
    return m;
  }
  std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) override {
    Tensor x = sample(sample_spec_, 4000, 99, nullptr);
    std::string path = (fs::path(dir) / (tag + ".png")).string(), data_path = (fs::path(dir) / "data.png").string();
    save_density(path, x, 3.0);
    save_density(data_path, data::gather_rows(train_, [&] {
                   std::vector<int64_t> i(static_cast<size_t>(std::min<int64_t>(4000, train_.size(0))));
                   for (size_t k = 0; k < i.size(); ++k) i[k] = int64_t(k);
                   return i;
                 }()), 3.0);
    return {"samples (" + sample_spec_ + "): " + path + "   data: " + data_path};
  }
  void set_state(const std::vector<int64_t>& s) override { set_state_gen(s, 0); }

 protected:
  Shape sample_shape(int64_t n) const override { return {n, 2}; }

 private:
  std::string dataset_;
  Tensor train_, val_;
};

// ---------------------------------------------------------------- ddpm on MNIST

class MnistDiffusionTask : public DiffusionTask<UNet> {
 public:
  MnistDiffusionTask(Config& c, const TaskContext& ctx) {
    clip_default_ = true;  // images live in [−1, 1]
    setup_common(c, ctx);
    // MNIST, or own images by path at data.image_size (docs/data.md; no normalisation or augmentation keys here).
    ImageData data = load_image_data(c, ctx, 28, false);
    n_train_ = data.train.images.size(0);
    source_ = data.source;
    // Augmentation: a random left-right flip (DDPM's for CIFAR-10); no crop, which would teach the model borders.
    hflip_ = c.get<bool>("data.hflip", false);
    aug_gen_.set_state(ctx.seed + 17, 0);
    if (batch_ > n_train_) c.fail_range("batch_size", batch_, "at most the " + std::to_string(n_train_) + " training images");
    test_x0_ = (data.eval.images * 2.0 - 1.0).contiguous();
    channels_ = data.channels;
    size_ = data.size;
    loader_.loader = std::make_unique<data::DataLoader>(
        std::make_shared<data::TensorDataset>(data::Batch{{{"image", data.train.images}, {"label", data.train.labels}}}),
        data::LoaderOptions{.batch_size = batch_, .seed = ctx.seed + 7});
    UNetConfig u;  // diffusion::UNet's constructor checks the sizes
    u.in_channels = channels_;
    u.base_channels = c.get<int64_t>("model.base_channels", 32);
    u.channel_mult = c.get<std::vector<int64_t>>("model.channel_mult", {1, 2, 2});
    u.num_res_blocks = c.get<int64_t>("model.num_res_blocks", 1);
    u.groups = c.get<int64_t>("model.groups", 8);
    u.image_size = size_;
    u.attention_resolutions = c.get<std::vector<int64_t>>("model.attention_resolutions", {});
    u.mid_attention = c.get<bool>("model.mid_attention", false);
    u.dropout = c.get<double>("model.dropout", 0.0);
    // Images halve at every level but the last (28 -> 14 -> 7): the size must divide evenly that often.
    const int64_t levels = int64_t(u.channel_mult.size());
    std::vector<int64_t> sizes{size_};
    while (int64_t(sizes.size()) < levels && sizes.back() % 2 == 0) sizes.push_back(sizes.back() / 2);
    std::string listed;
    for (int64_t r : sizes) listed += (listed.empty() ? "" : ", ") + std::to_string(r);
    LD_CHECK(levels <= int64_t(sizes.size()), "config ", c.source(), ": 'model.channel_mult' has ", levels, " levels; ",
             size_, "x", size_, " images take at most ", sizes.size(), " (", listed, ")");
    for (int64_t r : u.attention_resolutions)
      if (std::find(sizes.begin(), sizes.end(), r) == sizes.end())
        c.fail_range("model.attention_resolutions", r, "the resolution of a level (" + listed + ")");
    Generator init(ctx.seed);
    net_ = std::make_shared<UNet>(u, init);
    classifier_path_ = c.get<std::string>("eval.classifier", "");
    // FID needs the classifier at the first evaluation: a missing one is reported now, not after training.
    if (!eval_specs_.empty())
      LD_CHECK(size_ == 28 && channels_ == 1, "config ", c.source(), ": eval.samplers (FID) needs 28x28 gray images ",
               "(the mnist_cnn classifier's), got ", channels_, "x", size_, "x", size_, "; set eval.samplers = []");
    if (!eval_specs_.empty())
      LD_CHECK(!classifier_path_.empty() && fs::is_regular_file(classifier_path_), "config ", c.source(),
               ": eval.samplers needs 'eval.classifier', a mnist_cnn checkpoint (e.g. runs/mnist-cnn/checkpoints/",
               "best.safetensors); got '", classifier_path_, "'");
    fixed_batch_ = test_x0_.narrow(0, 0, std::min<int64_t>(256, test_x0_.size(0))).contiguous();
  }
  std::string describe() const override {
    return "U-Net " + std::to_string(net_->num_parameters()) + " parameters on " + source_ + " (" +
           std::to_string(n_train_) + " images, " + std::to_string(channels_) + "x" + std::to_string(size_) + "x" +
           std::to_string(size_) + "), process " + proc_.name + ", prediction " + prediction_name(pred_) + ", batch " + std::to_string(batch_);
  }
  Tensor train_loss() override {
    // The global batch is flipped (one draw per image, whatever the sharing), then this share taken.
    Tensor x = loader_.loader->next()["image"];
    if (hflip_) x = data::augment_images(x, {.hflip = true}, aug_gen_);
    return train_loss_of(ctx_.shard(x) * 2.0 - 1.0);
  }
  Metrics evaluate() override {
    Metrics m{{"val_loss", fixed_loss(fixed_batch_)}};
    if (eval_specs_.empty()) return m;
    load_classifier();
    for (auto& spec : eval_specs_) {
      int64_t nfe = 0;
      Tensor x = sample(spec, eval_samples_, eval_seed_, &nfe);
      m.emplace_back(spec + "/fid", metrics::frechet_distance(features((clamp(x, -1.0, 1.0) + 1.0) * 0.5), real_features_));
      if (spec.rfind("ode_rk45", 0) == 0) m.emplace_back(spec + "/nfe", double(nfe));
    }
    return m;
  }
  std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) override {
    Tensor x = sample(sample_spec_, sample_count_, 99, nullptr);
    std::string path = (fs::path(dir) / (tag + ".png")).string();
    data::save_image_grid(path, clamp(x, -1.0, 1.0), data::GridOptions{.lo = -1.0, .hi = 1.0});
    return {"samples (" + sample_spec_ + "): " + path};
  }
  // The loader's state, the flips' generator offset (with data.hflip only, so older checkpoints still resume) and
  // the noise generator's seed and offset.
  std::vector<int64_t> state() const override {
    auto s = loader_.state();
    if (hflip_) s.push_back(int64_t(aug_gen_.offset()));
    s.push_back(int64_t(gen_.seed()));
    s.push_back(int64_t(gen_.offset()));
    return s;
  }
  void set_state(const std::vector<int64_t>& s) override {
    const size_t extra = hflip_ ? 3 : 2;
    LD_CHECK(s.size() >= extra, "ddpm: task state too short");
    loader_.set_state(std::vector<int64_t>(s.begin(), s.end() - long(extra)));
    if (hflip_) aug_gen_.set_state(aug_gen_.seed(), uint64_t(s[s.size() - 3]));
    set_state_gen(s, s.size() - 2);
  }

 protected:
  Shape sample_shape(int64_t n) const override { return {n, channels_, size_, size_}; }

 private:
  // The FID classifier: a mnist_cnn run's checkpoint (its "model." tensors).
  void load_classifier() {
    if (classifier_) return;
    LD_CHECK(!classifier_path_.empty(), "ddpm: eval.samplers needs eval.classifier (a mnist_cnn checkpoint, e.g. ",
             "runs/mnist-cnn/checkpoints/best.safetensors)");
    Generator g(0);
    classifier_ = std::make_shared<MnistCNN>(g);
    NamedTensors model;
    for (auto& [k, t] : load_safetensors(classifier_path_).tensors)
      if (k.rfind("model.", 0) == 0) model.emplace_back(k.substr(6), t);
    classifier_->load_state_dict(model, true);
    classifier_->eval();
    real_features_ = features((test_x0_ + 1.0) * 0.5);
  }
  Tensor features(const Tensor& images01) {
    NoGradGuard ng;
    std::vector<Tensor> parts;
    for (int64_t i = 0; i < images01.size(0); i += 500)
      parts.push_back(classifier_->features(images01.narrow(0, i, std::min<int64_t>(500, images01.size(0) - i)).contiguous()));
    return cat(parts, 0);
  }

  int64_t n_train_ = 0;
  std::string source_;  // MNIST, or the data.train path
  bool hflip_ = false;
  Generator aug_gen_;  // the flips' draws (seeded from the run's seed in the constructor)
  Tensor test_x0_, fixed_batch_, real_features_;
  int64_t channels_ = 1, size_ = 28;
  LoaderState loader_;
  std::string classifier_path_;
  std::shared_ptr<MnistCNN> classifier_;
};

TaskRegistration reg_toy("toy2d", "diffusion on 2-D toy data with an MLP denoiser (every sampler; sliced W1)",
                         [](Config& c, const TaskContext& ctx) { return std::make_unique<Toy2dTask>(c, ctx); });
TaskRegistration reg_ddpm("ddpm", "DDPM U-Net on MNIST or own images (every sampler; FID on a liandan-trained CNN's features)",
                          [](Config& c, const TaskContext& ctx) { return std::make_unique<MnistDiffusionTask>(c, ctx); });

}  // namespace
}  // namespace liandan::apps
