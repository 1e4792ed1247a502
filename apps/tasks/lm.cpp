// task "lm": a RoFormer character-level language model (nn/models.h) on any text — by default Debian's
// `fortunes` corpus. Metrics: validation loss and bits per character (bits per byte in bytes mode, per token
// with a BPE tokenizer, data.tokenizer), also
// at longer lengths than trained on (length extrapolation, eval.lengths). Samples: generated text.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>

#include "apps/task.h"
#include "apps/tokenizer_cmd.h"
#include "core/autograd.h"
#include "core/data/sampler.h"
#include "core/data/text.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "nn/models.h"

namespace liandan::apps {
namespace {

namespace fs = std::filesystem;

// Bounds of the task's keys beyond which a value is nonsense (and would overflow or exhaust memory).
constexpr int64_t kMaxLength = int64_t(1) << 20, kMaxBatch = int64_t(1) << 20, kMaxWidth = int64_t(1) << 24;
constexpr double kInf = std::numeric_limits<double>::infinity();

// A few hundred bytes of text so the task runs even without the fortunes package (a fallback only: the
// real corpora are the fortunes files that scripts/install-deps installs).
constexpr const char* kEmbeddedText =
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.\n"
    "To be, or not to be, that is the question. All that glitters is not gold. Knowledge is power.\n"
    "Where there is a will, there is a way. Actions speak louder than words. Time is money.\n";

// Debian's fortunes packages all install into one folder, so the corpora are lists of files (dpkg -L):
// English = `fortunes` + `fortunes-min` (43 files, 2.58 MB), Chinese = `fortunes-zh` (3 files, 2.23 MB).
// (`fortunes-off` adds an off/ subfolder, in neither list.)
constexpr const char* kFortunesDir = "/usr/share/games/fortunes";
const std::vector<std::string> kEnglishFortunes = {
    "art", "ascii-art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education",
    "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie",
    "literature", "love", "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum", "people", "perl",
    "pets", "platitudes", "politics", "pratchett", "riddles", "science", "songs-poems", "sports", "startrek", "tao",
    "translate-me", "wisdom", "work", "zippy"};
const std::vector<std::string> kChineseFortunes = {"chinese", "song100", "tang300"};

// The entries of the listed files that exist, in list order, joined as fortunes_corpus joins entries.
std::string fortunes_files(const std::string& corpus, const std::vector<std::string>& names, const std::string& source) {
  std::string text;
  int64_t found = 0;
  for (const auto& name : names) {
    fs::path f = fs::path(kFortunesDir) / name;
    if (!fs::is_regular_file(f)) continue;
    ++found;
    std::string t = data::fortunes_corpus(f.string());
    if (t.empty()) continue;
    if (!text.empty()) text += "\n\n";
    text += t;
  }
  LD_CHECK(found > 0, "config ", source, ": data.corpus '", corpus, "': none of its files are in ", kFortunesDir,
           " (run scripts/get-data text)");
  return text;
}

std::string load_corpus(const std::string& corpus, const std::string& source) {
  if (corpus == "embedded") return kEmbeddedText;
  if (corpus == "fortunes") return fortunes_files(corpus, kEnglishFortunes, source);
  if (corpus == "fortunes-zh") return fortunes_files(corpus, kChineseFortunes, source);
  LD_CHECK(!corpus.empty() && fs::exists(corpus), "config ", source, ": data.corpus '", corpus,
           "' is neither embedded, fortunes, fortunes-zh nor an existing file or folder");
  return data::read_text(corpus);
}

nn::PositionEncoding parse_position(const std::string& s, const std::string& source) {
  if (s == "rope") return nn::PositionEncoding::rope1d;
  if (s == "sinusoidal") return nn::PositionEncoding::sinusoidal;
  if (s == "learned") return nn::PositionEncoding::learned;
  if (s == "none") return nn::PositionEncoding::none;
  LD_FAIL("config ", source, ": 'model.position' must be rope, sinusoidal, learned or none; got '", s, "'");
}

class LMTask : public Task {
 public:
  LMTask(Config& c, const TaskContext& ctx) : gen_(ctx.seed + 1), init_gen_(ctx.seed) {
    std::string corpus = c.get<std::string>("data.corpus", "fortunes");
    std::string mode = c.get<std::string>("data.mode", "bytes");
    LD_CHECK(mode == "bytes" || mode == "chars", "config ", c.source(), ": 'data.mode' must be bytes or chars; got '",
             mode, "'");
    std::optional<data::Tokenizer> bpe = bpe_tokenizer_from_config(c, mode);  // data.tokenizer: a BPE file
    int64_t max_bytes = c.get_int("data.max_bytes", 0, 0);  // 0: the whole corpus
    double val_fraction = c.get_real("data.val_fraction", 0.05, 0, 1, true, true);
    seq_len_ = c.get_int("data.seq_len", 128, 1, kMaxLength);
    batch_ = c.get_int("batch_size", 32, 1, kMaxBatch);
    ctx.check_batch(batch_);
    ctx_ = ctx;
    std::string text = load_corpus(corpus, c.source());
    if (max_bytes > 0 && int64_t(text.size()) > max_bytes) text.resize(size_t(max_bytes));
    tok_ = bpe ? *bpe : mode == "bytes" ? data::Tokenizer::bytes() : data::Tokenizer::chars(text);
    Tensor ids = tok_.encode_tensor(text);
    auto split = data::split_tokens(ids, val_fraction);
    train_ = split.train.contiguous();
    val_ = split.val.contiguous();
    corpus_desc_ = corpus + " (" + std::to_string(text.size()) + " bytes, " + std::to_string(ids.numel()) + " tokens)";

    nn::RoFormerLMConfig m;  // the model checks its sizes (nn::RoFormerLM's constructor)
    m.vocab_size = tok_.vocab_size();
    m.d_model = c.get_int("model.d_model", 128, 1, kMaxWidth);  // bounded here too: d_ff's default is 4 d_model
    m.n_layers = c.get<int64_t>("model.n_layers", 4);
    m.n_heads = c.get<int64_t>("model.n_heads", 4);
    m.d_ff = c.get<int64_t>("model.d_ff", 4 * m.d_model);
    m.position = parse_position(c.get<std::string>("model.position", "rope"), c.source());
    std::string attn = c.get<std::string>("model.attention", "softmax");
    LD_CHECK(attn == "softmax" || attn == "linear", "config ", c.source(),
             ": 'model.attention' must be softmax or linear; got '", attn, "'");
    m.kind = attn == "softmax" ? nn::AttentionKind::softmax : nn::AttentionKind::linear;
    m.rope_base = c.get_real("model.rope_base", 10000.0, 0, kInf, true);
    m.dropout = c.get<double>("model.dropout", 0.0);
    eval_lengths_ = c.get_ints("eval.lengths", {seq_len_}, 1, kMaxLength, 1);
    m.max_len = std::max(seq_len_, *std::max_element(eval_lengths_.begin(), eval_lengths_.end()));
    eval_tokens_ = c.get_int("eval.tokens", 16384, 1);
    prompt_ = c.get<std::string>("sample.prompt", "The ");
    sample_len_ = c.get_int("sample.length", 400, 0, kMaxLength);
    // Sampling happens at the end of the run: its options are checked now, not after training.
    gen_opt_ = nn::GenerateOptions{.greedy = false,
                                   .temperature = c.get_real("sample.temperature", 0.8, 0, kInf, true),
                                   .top_k = c.get_int("sample.top_k", 0, 0),
                                   .seed = uint64_t(c.get_int("sample.seed", 1234, 0))};
    nn::check_generate_options(gen_opt_);
    try {
      for (int64_t id : tok_.encode(prompt_)) prompt_ids_.push_back(id);
    } catch (const Error& e) {
      LD_FAIL("config ", c.source(), ": 'sample.prompt' cannot be encoded: ", e.what());
    }
    if (prompt_ids_.empty()) prompt_ids_.push_back(0);
    LD_CHECK(train_.numel() > seq_len_ + 1, "config ", c.source(), ": the corpus (", train_.numel(),
             " training tokens) is shorter than data.seq_len + 1 = ", seq_len_ + 1);
    // Every evaluation length needs one whole window (L + 1 tokens) of the evaluated validation tokens.
    const int64_t evaluated = evaluated_tokens();
    for (int64_t L : eval_lengths_)
      LD_CHECK(evaluated >= L + 1, "config ", c.source(), ": 'eval.lengths' holds ", L, ", but a window of ", L + 1,
               " tokens does not fit in the ", evaluated, " evaluated validation tokens (eval.tokens ", eval_tokens_,
               " + 1, at most the ", val_.numel(), " tokens that data.val_fraction ", val_fraction, " leaves)");
    if (m.position == nn::PositionEncoding::learned)
      LD_CHECK(int64_t(prompt_ids_.size()) <= m.max_len, "config ", c.source(), ": 'sample.prompt' has ",
               prompt_ids_.size(), " tokens, more than the ", m.max_len, " learned positions");
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

  // Data-parallel: every rank draws the global batch's windows (gen_ stays in step) and keeps its rows.
  Tensor train_loss() override {
    return model_->loss(ctx_.shard(data::random_windows(train_, batch_, seq_len_, gen_)));
  }

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
    Tensor p = from_vector(prompt_ids_, {1, int64_t(prompt_ids_.size())});
    int64_t room = model_->config.position == nn::PositionEncoding::learned ? model_->config.max_len - p.size(1)
                                                                             : sample_len_;
    Tensor out = model_->generate(p, std::max<int64_t>(0, std::min(sample_len_, room)), gen_opt_);
    std::string text = tok_.decode(out);
    if (tok_.mode() != data::TextMode::chars) text = data::utf8_encode(data::utf8_decode(text));  // valid UTF-8 for the terminal
    fs::path file = fs::path(dir) / (tag + ".txt");
    std::ofstream(file) << text << "\n";
    return {"generated text (" + file.string() + "):", "----", text, "----"};
  }

  // The window generator's state (and, with a BPE, its fingerprint: apps/tokenizer_cmd.h).
  std::vector<int64_t> state() const override {
    return with_bpe_fingerprint(tok_, {int64_t(gen_.seed()), int64_t(gen_.offset())});
  }
  void set_state(const std::vector<int64_t>& state) override {
    std::vector<int64_t> s = without_bpe_fingerprint(tok_, state);
    LD_CHECK(s.size() == 2, "lm: task state must hold 2 integers, got ", s.size());
    gen_.set_state(uint64_t(s[0]), uint64_t(s[1]));
  }

 private:
  // eval.tokens + 1 validation tokens (the +1: the last token is only a target), at most all of them.
  int64_t evaluated_tokens() const { return eval_tokens_ >= val_.numel() ? val_.numel() : eval_tokens_ + 1; }

  // Mean next-token loss over the first eval.tokens validation tokens, cut into windows of length L
  // (one token of overlap, so every token is predicted once).
  double eval_loss(int64_t L) {
    int64_t n = evaluated_tokens();
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
  TaskContext ctx_;
  data::Tokenizer tok_ = data::Tokenizer::bytes();
  Tensor train_, val_;
  std::string corpus_desc_;
  int64_t seq_len_, batch_, eval_tokens_, sample_len_;
  std::vector<int64_t> eval_lengths_;
  std::string prompt_;
  std::vector<int64_t> prompt_ids_;
  nn::GenerateOptions gen_opt_;
  std::shared_ptr<nn::RoFormerLM> model_;
};

TaskRegistration reg("lm", "RoFormer character/byte language model on a text corpus (default: fortunes)",
                     [](Config& c, const TaskContext& ctx) { return std::make_unique<LMTask>(c, ctx); });

}  // namespace
}  // namespace liandan::apps
