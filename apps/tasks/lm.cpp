// task "lm": a RoFormer character-level language model (nn/models.h) on any text — by default Debian's
// `fortunes` corpus. Metrics: validation loss and bits per character (bits per byte in bytes mode), also
// at longer lengths than trained on (length extrapolation, eval.lengths). Samples: generated text.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "apps/task.h"
#include "core/autograd.h"
#include "core/data/text.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/models.h"

namespace liandan::apps {
namespace {

namespace fs = std::filesystem;

// A few hundred bytes of text so the task runs even without the fortunes package (a fallback only: the
// real corpora are the fortunes files that scripts/install-deps installs).
constexpr const char* kEmbeddedText =
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.\n"
    "To be, or not to be, that is the question. All that glitters is not gold. Knowledge is power.\n"
    "Where there is a will, there is a way. Actions speak louder than words. Time is money.\n";

std::string load_corpus(const std::string& corpus, const std::string& source) {
  if (corpus == "embedded") return kEmbeddedText;
  std::string path = corpus;
  if (corpus == "fortunes") path = "/usr/share/games/fortunes";
  if (corpus == "fortunes-zh") path = "/usr/share/games/fortunes/zh";
  LD_CHECK(fs::exists(path), "config ", source, ": data.corpus '", corpus, "': ", path,
           " does not exist (for the fortunes corpora run scripts/get-data text)");
  if (corpus == "fortunes") {
    // The English files only: the top-level files of the directory (zh/ and off/ are subdirectories).
    std::string text;
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() != ".dat" && e.path().extension() != ".u8") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& f : files) text += data::fortunes_corpus(f.string());
    return text;
  }
  if (corpus == "fortunes-zh") return data::fortunes_corpus(path);
  return data::read_text(path);
}

nn::PositionEncoding parse_position(const std::string& s, const std::string& source) {
  if (s == "rope") return nn::PositionEncoding::rope1d;
  if (s == "sinusoidal") return nn::PositionEncoding::sinusoidal;
  if (s == "learned") return nn::PositionEncoding::learned;
  if (s == "none") return nn::PositionEncoding::none;
  LD_FAIL("config ", source, ": model.position must be rope, sinusoidal, learned or none; got '", s, "'");
}

class LMTask : public Task {
 public:
  LMTask(Config& c, const TaskContext& ctx) : gen_(ctx.seed + 1), init_gen_(ctx.seed) {
    std::string corpus = c.get<std::string>("data.corpus", "fortunes");
    std::string mode = c.get<std::string>("data.mode", "bytes");
    LD_CHECK(mode == "bytes" || mode == "chars", "config ", c.source(), ": data.mode must be bytes or chars");
    int64_t max_bytes = c.get<int64_t>("data.max_bytes", 0);
    double val_fraction = c.get<double>("data.val_fraction", 0.05);
    seq_len_ = c.get<int64_t>("data.seq_len", 128);
    batch_ = c.get<int64_t>("batch_size", 32);
    std::string text = load_corpus(corpus, c.source());
    if (max_bytes > 0 && int64_t(text.size()) > max_bytes) text.resize(size_t(max_bytes));
    tok_ = mode == "bytes" ? data::Tokenizer::bytes() : data::Tokenizer::chars(text);
    Tensor ids = tok_.encode_tensor(text);
    auto split = data::split_tokens(ids, val_fraction);
    train_ = split.train.contiguous();
    val_ = split.val.contiguous();
    corpus_desc_ = corpus + " (" + std::to_string(text.size()) + " bytes, " + std::to_string(ids.numel()) + " tokens)";

    nn::RoFormerLMConfig m;
    m.vocab_size = tok_.vocab_size();
    m.d_model = c.get<int64_t>("model.d_model", 128);
    m.n_layers = c.get<int64_t>("model.n_layers", 4);
    m.n_heads = c.get<int64_t>("model.n_heads", 4);
    m.d_ff = c.get<int64_t>("model.d_ff", 4 * m.d_model);
    m.position = parse_position(c.get<std::string>("model.position", "rope"), c.source());
    std::string attn = c.get<std::string>("model.attention", "softmax");
    LD_CHECK(attn == "softmax" || attn == "linear", "config ", c.source(), ": model.attention must be softmax or linear");
    m.kind = attn == "softmax" ? nn::AttentionKind::softmax : nn::AttentionKind::linear;
    m.rope_base = c.get<double>("model.rope_base", 10000.0);
    m.dropout = c.get<double>("model.dropout", 0.0);
    eval_lengths_ = c.get<std::vector<int64_t>>("eval.lengths", {seq_len_});
    int64_t max_eval = *std::max_element(eval_lengths_.begin(), eval_lengths_.end());
    m.max_len = std::max(seq_len_, max_eval);
    eval_tokens_ = c.get<int64_t>("eval.tokens", 16384);
    prompt_ = c.get<std::string>("sample.prompt", "The ");
    sample_len_ = c.get<int64_t>("sample.length", 400);
    temperature_ = c.get<double>("sample.temperature", 0.8);
    top_k_ = c.get<int64_t>("sample.top_k", 0);
    LD_CHECK(train_.numel() > seq_len_ + 1, "config ", c.source(), ": the corpus (", train_.numel(),
             " training tokens) is shorter than data.seq_len + 1 = ", seq_len_ + 1);
    model_ = std::make_shared<nn::RoFormerLM>(m, init_gen_);
  }

  nn::Module& model() override { return *model_; }
  // Token batches stay on the host: embedding and the loss's gather move indices to the model's device.
  bool runs_on_devices() const override { return true; }
  std::string describe() const override {
    return "RoFormer LM, " + std::to_string(model_->num_parameters()) + " parameters, vocab " +
           std::to_string(tok_.vocab_size()) + ", context " + std::to_string(seq_len_) + ", batch " +
           std::to_string(batch_) + "; corpus " + corpus_desc_;
  }

  Tensor train_loss() override { return model_->loss(data::random_windows(train_, batch_, seq_len_, gen_)); }

  Metrics evaluate() override {
    Metrics m;
    for (int64_t L : eval_lengths_) {
      double nats = eval_loss(L);
      std::string suffix = L == seq_len_ ? "" : "@" + std::to_string(L);
      m.emplace_back("val_loss" + suffix, nats);
      m.emplace_back("val_bpc" + suffix, nats / std::numbers::ln2);
    }
    return m;
  }

  std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) override {
    std::vector<int64_t> prompt;
    for (int64_t id : tok_.encode(prompt_)) prompt.push_back(id);
    if (prompt.empty()) prompt.push_back(0);
    Tensor p = from_vector(prompt, {1, int64_t(prompt.size())});
    nn::GenerateOptions g{.greedy = false, .temperature = temperature_, .top_k = top_k_, .seed = 1234};
    int64_t room = model_->config.position == nn::PositionEncoding::learned ? model_->config.max_len - p.size(1)
                                                                             : sample_len_;
    Tensor out = model_->generate(p, std::min(sample_len_, room), g);
    std::string text = tok_.decode(out);
    if (tok_.mode() == data::TextMode::bytes) text = data::utf8_encode(data::utf8_decode(text));  // valid UTF-8 for the terminal
    fs::path file = fs::path(dir) / (tag + ".txt");
    std::ofstream(file) << text << "\n";
    return {"generated text (" + file.string() + "):", "----", text, "----"};
  }

  std::vector<int64_t> state() const override { return {int64_t(gen_.seed()), int64_t(gen_.offset())}; }
  void set_state(const std::vector<int64_t>& s) override {
    LD_CHECK(s.size() == 2, "lm: task state must hold 2 integers, got ", s.size());
    gen_.set_state(uint64_t(s[0]), uint64_t(s[1]));
  }

 private:
  // Mean next-token loss over the first eval.tokens validation tokens, cut into windows of length L
  // (one token of overlap, so every token is predicted once).
  double eval_loss(int64_t L) {
    int64_t n = std::min(val_.numel(), eval_tokens_ + 1);
    int64_t windows = (n - 1) / L;
    LD_CHECK(windows >= 1, "lm: the validation text (", val_.numel(), " tokens) is shorter than one window of ", L + 1);
    double total = 0;
    int64_t per_batch = std::max<int64_t>(1, 8192 / L);
    for (int64_t w0 = 0; w0 < windows; w0 += per_batch) {
      int64_t b = std::min(per_batch, windows - w0);
      Tensor x = empty({b, L + 1}, DType::i64);
      for (int64_t i = 0; i < b; ++i) x.select(0, i).copy_(val_.narrow(0, (w0 + i) * L, L + 1));
      total += model_->loss(x).item() * double(b);
    }
    return total / double(windows);
  }

  Generator gen_, init_gen_;
  data::Tokenizer tok_ = data::Tokenizer::bytes();
  Tensor train_, val_;
  std::string corpus_desc_;
  int64_t seq_len_, batch_, eval_tokens_, sample_len_, top_k_;
  std::vector<int64_t> eval_lengths_;
  std::string prompt_;
  double temperature_;
  std::shared_ptr<nn::RoFormerLM> model_;
};

TaskRegistration reg("lm", "RoFormer character/byte language model on a text corpus (default: fortunes)",
                     [](Config& c, const TaskContext& ctx) { return std::make_unique<LMTask>(c, ctx); });

}  // namespace
}  // namespace liandan::apps
