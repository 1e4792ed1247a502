// task "text_cls": a RoFormer encoder (nn/models.h, bidirectional, RoPE) classifying texts, docs/data.md.
//   data:  data.train / data.validation / data.test: `labels<TAB>text` lines (`a,b<TAB>text`: several labels)
//          or one folder per class (each file one example); tokenised as bytes or characters (data.mode) or
//          by a byte-level BPE file (data.tokenizer),
//          cut at data.max_len tokens and padded per batch (core/data/text_cls.h pad_sequences: key masks).
//   loss:  "ce" (softmax cross-entropy, one label per text) or "zlpr" (multi-label; the default when a text
//          has several labels). Metrics: accuracy (ce), micro/macro F1 and exact match (zlpr, threshold 0).
#include <algorithm>
#include <limits>

#include "core/fileio.h"

#include "apps/tasks/mnist_common.h"
#include "apps/tokenizer_cmd.h"
#include "core/data/text.h"
#include "core/data/text_cls.h"
#include "losses/metrics.h"
#include "nn/models.h"

namespace liandan::apps {
namespace {

class TextClsTask : public Task {
 public:
  TextClsTask(Config& c, const TaskContext& ctx) : ctx_(ctx) {
    std::string train = c.get<std::string>("data.train", ""), test = c.get<std::string>("data.test", "");
    std::string val = c.get<std::string>("data.validation", "");
    if (train.empty()) c.fail_range("data.train", "\"\"", "a labelled text file (`label<TAB>text` lines) or a folder per class");
    train_ = load(c, "data.train", train, {});
    std::string eval_path = val.empty() ? test : val;
    if (eval_path.empty()) c.fail_range("data.test", "\"\"", "a labelled text file or folder (or give data.validation)");
    eval_ = load(c, val.empty() ? "data.test" : "data.validation", eval_path, train_.classes);
    std::string mode = c.get<std::string>("data.mode", "bytes");
    if (mode != "bytes" && mode != "chars") c.fail_range("data.mode", "'" + mode + "'", "\"bytes\" or \"chars\"");
    std::optional<data::Tokenizer> bpe = bpe_tokenizer_from_config(c, mode);  // data.tokenizer: a BPE file
    max_len_ = c.get_int("data.max_len", 128, 1, 1 << 16);
    // Characters: the vocabulary of every split (a character first seen in the test split still has an id;
    // its embedding is untrained). Id 0 is kept for padding.
    std::string all;
    for (auto* s : {&train_, &eval_})
      for (auto& t : s->texts) all += t;
    tok_ = bpe ? *bpe : mode == "bytes" ? data::Tokenizer::bytes() : data::Tokenizer::chars(all);
    for (auto* s : {&train_, &eval_}) {
      std::vector<std::vector<int64_t>> ids;
      for (auto& t : s->texts) {
        std::vector<int64_t> x = tok_.encode(t);
        if (int64_t(x.size()) > max_len_) x.resize(size_t(max_len_));
        for (auto& v : x) v += 1;  // 0 = padding
        ids.push_back(std::move(x));
      }
      (s == &train_ ? train_ids_ : eval_ids_) = std::move(ids);
    }
    n_classes_ = int64_t(train_.classes.size());
    if (n_classes_ < 2) c.fail_range("data.train", "'" + train + "'", "a set of at least 2 classes, it has " + std::to_string(n_classes_));
    loss_ = c.get<std::string>("loss.name", train_.multi_label() ? "zlpr" : "ce");
    if (loss_ != "ce" && loss_ != "zlpr") c.fail_range("loss.name", "'" + loss_ + "'", "\"ce\" or \"zlpr\"");
    if (loss_ == "ce" && train_.multi_label())
      c.fail_range("loss.name", "'ce'", "\"zlpr\" for multi-label data (a text in " + train + " has several labels)");

    batch_ = read_batch_size(c, 32, int64_t(train_ids_.size()), "training texts");
    ctx.check_batch(batch_);
    std::vector<int64_t> idx(train_ids_.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
    loader_.loader = std::make_unique<data::DataLoader>(
        std::make_shared<data::TensorDataset>(data::Batch{{{"index", from_vector(idx, {int64_t(idx.size())})}}}),
        data::LoaderOptions{.batch_size = batch_, .shuffle = true, .drop_last = true, .seed = ctx.seed + 7});
    nn::RoFormerEncoderConfig m;
    m.vocab_size = tok_.vocab_size() + 1;
    m.max_len = max_len_;
    m.n_classes = n_classes_;
    m.d_model = c.get_int("model.d_model", 64, 1, int64_t(1) << 20);
    m.n_layers = c.get<int64_t>("model.n_layers", 2);
    m.n_heads = c.get<int64_t>("model.n_heads", 4);
    m.d_ff = c.get<int64_t>("model.d_ff", 4 * m.d_model);
    m.rope_base = c.get_real("model.rope_base", 10000.0, 0, std::numeric_limits<double>::infinity(), true);
    m.dropout = c.get<double>("model.dropout", 0.0);
    Generator init(ctx.seed);
    net_ = std::make_shared<nn::RoFormerEncoder>(m, init);
  }

  nn::Module& model() override { return *net_; }
  bool runs_on_devices() const override { return true; }
  std::string describe() const override {
    return "RoFormer encoder with " + std::to_string(net_->num_parameters()) + " parameters, " +
           std::to_string(train_ids_.size()) + " train / " + std::to_string(eval_ids_.size()) + " eval texts, " +
           std::to_string(n_classes_) + " classes, loss " + loss_ + ", batch " + std::to_string(batch_);
  }
  Tensor train_loss() override {
    std::vector<double> rows = loader_.next(ctx_)["index"].to_vector();
    std::vector<int64_t> r(rows.begin(), rows.end());
    return loss(forward(train_ids_, r), train_.labels, r);
  }
  Metrics evaluate() override {
    std::vector<int64_t> all(eval_ids_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    double total = 0;
    std::vector<Tensor> outs;
    for (size_t i = 0; i < all.size(); i += 256) {
      std::vector<int64_t> r(all.begin() + long(i), all.begin() + long(std::min(all.size(), i + 256)));
      Tensor out = forward(eval_ids_, r).cpu();
      total += loss(out, eval_.labels, r).item() * double(r.size());
      outs.push_back(out);
    }
    Tensor scores = cat(outs, 0);
    Metrics m{{"val_loss", total / double(all.size())}};
    if (loss_ == "ce") {
      std::vector<double> pred = argmax(scores, 1).to_vector();
      int64_t correct = 0;
      for (size_t i = 0; i < pred.size(); ++i) correct += int64_t(pred[i]) == eval_.labels[i][0];
      m.emplace_back("val_accuracy", double(correct) / double(pred.size()));
    } else {
      Tensor t = data::multi_hot(eval_.labels, n_classes_);
      auto f1 = metrics::multilabel_f1(scores, t);
      m.emplace_back("val_micro_f1", f1.micro);
      m.emplace_back("val_macro_f1", f1.macro);
      m.emplace_back("val_exact_match", metrics::multilabel_exact_match(scores, t));
    }
    return m;
  }
  std::pair<std::string, bool> best_metric() const override {
    return {loss_ == "ce" ? "val_accuracy" : "val_micro_f1", false};
  }
  // Predictions for the first evaluation texts: "predicted <- true: text" lines (also written to TAG-predictions.txt).
  std::vector<std::string> write_samples(const std::string& dir, const std::string& tag) override {
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < std::min<int64_t>(16, int64_t(eval_ids_.size())); ++i) rows.push_back(i);
    Tensor scores = forward(eval_ids_, rows).cpu();
    std::vector<double> s = scores.to_vector();
    std::vector<std::string> lines;
    std::string all;
    for (size_t i = 0; i < rows.size(); ++i) {
      std::string pred, truth;
      const double* row = &s[i * size_t(n_classes_)];
      int64_t best = int64_t(std::max_element(row, row + n_classes_) - row);
      for (int64_t k = 0; k < n_classes_; ++k)  // ce: the argmax; zlpr: every score above 0
        if (loss_ == "ce" ? k == best : row[k] > 0) pred += (pred.empty() ? "" : ",") + train_.classes[size_t(k)];
      for (int64_t k : eval_.labels[i]) truth += (truth.empty() ? "" : ",") + train_.classes[size_t(k)];
      std::string text = eval_.texts[i].substr(0, 60);
      std::replace(text.begin(), text.end(), '\n', ' ');
      lines.push_back((pred.empty() ? "-" : pred) + " <- " + truth + ": " + text);
      all += lines.back() + "\n";
    }
    write_file_atomic(dir + "/" + tag + "-predictions.txt", all);
    return lines;
  }
  // The loader's state (and, with a BPE, its fingerprint: apps/tokenizer_cmd.h).
  std::vector<int64_t> state() const override { return with_bpe_fingerprint(tok_, loader_.state()); }
  void set_state(const std::vector<int64_t>& s) override { loader_.set_state(without_bpe_fingerprint(tok_, s)); }

 private:
  static data::LabelledText load(Config& c, const std::string& key, const std::string& path,
                                 const std::vector<std::string>& classes) {
    try {
      return data::read_labelled_text(path, classes);
    } catch (const Error& e) {
      throw Error(detail::cat_message("config ", c.source(), ": '", key, "' = '", path, "': ", e.what()));
    }
  }
  Tensor forward(const std::vector<std::vector<int64_t>>& ids, const std::vector<int64_t>& rows) {
    std::vector<std::vector<int64_t>> seqs;
    for (int64_t r : rows) seqs.push_back(ids[size_t(r)]);
    data::PaddedBatch b = data::pad_sequences(seqs, 0, max_len_);
    return net_->forward(b.ids.to(device), b.key_valid.to(device));
  }
  Tensor loss(const Tensor& out, const std::vector<std::vector<int64_t>>& labels, const std::vector<int64_t>& rows) {
    std::vector<std::vector<int64_t>> l;
    for (int64_t r : rows) l.push_back(labels[size_t(r)]);
    if (loss_ == "zlpr") return losses::zlpr(out, data::multi_hot(l, n_classes_).to(out.device()));
    std::vector<int64_t> y;
    for (auto& v : l) y.push_back(v[0]);
    return losses::cross_entropy(out, from_vector(y, {int64_t(y.size())}));
  }

  data::LabelledText train_, eval_;
  std::vector<std::vector<int64_t>> train_ids_, eval_ids_;
  data::Tokenizer tok_ = data::Tokenizer::bytes();
  int64_t max_len_ = 0, n_classes_ = 0, batch_ = 0;
  std::string loss_;
  LoaderState loader_;
  TaskContext ctx_;
  std::shared_ptr<nn::RoFormerEncoder> net_;
};

TaskRegistration reg("text_cls", "text classifier: RoFormer encoder, padding masks, softmax CE or ZLPR (multi-label)",
                     [](Config& c, const TaskContext& ctx) { return std::make_unique<TextClsTask>(c, ctx); });

}  // namespace
}  // namespace liandan::apps
