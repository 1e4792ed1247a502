// `liandan tokenizer ...` and the tasks' data.tokenizer key (apps/tokenizer_cmd.h).
#include "apps/tokenizer_cmd.h"

#include <chrono>
#include <cstdio>
#include <memory>

#include "core/data/bpe.h"
#include "core/error.h"

namespace liandan::apps {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A token's bytes for the terminal: printable ASCII as is, the rest as \xNN (so NUL or broken UTF-8 shows).
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') out += char(c);
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

int tokenizer_train(const std::string& corpus, int64_t vocab, const std::string& out, int64_t min_frequency) {
  std::string text = data::read_text(corpus);
  LD_CHECK(!text.empty(), "tokenizer train: ", corpus, " holds no text");
  const double mb = double(text.size()) / 1e6;
  auto t0 = std::chrono::steady_clock::now();
  data::BPETrainStats st;
  data::BPE bpe = data::BPE::train(text, {.vocab_size = vocab, .min_frequency = min_frequency}, &st);
  const double train_s = seconds_since(t0);
  bpe.save(out);
  t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> ids = bpe.encode(text);
  const double encode_s = seconds_since(t0);
  LD_CHECK(bpe.decode(ids) == text, "tokenizer train: the corpus does not decode back to itself (a bug)");
  std::printf("corpus %s: %.2f MB, %lld chunks (%lld distinct)\n", corpus.c_str(), mb, (long long)st.chunks,
              (long long)st.unique_chunks);
  std::printf("learned %lld merges (vocab %lld) in %.2f s: %.2f MB/s%s\n", (long long)st.merges,
              (long long)bpe.vocab_size(), train_s, mb / std::max(train_s, 1e-9),
              st.stopped_early ? " (stopped early: no pair left that occurs --min-frequency times)" : "");
  std::printf("encoded the corpus in %.2f s: %.2f MB/s, %lld tokens, %.2f bytes per token\n", encode_s,
              mb / std::max(encode_s, 1e-9), (long long)ids.size(), double(text.size()) / double(std::max<size_t>(ids.size(), 1)));
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

int tokenizer_encode(const std::string& file, const std::string& text) {
  data::BPE bpe = data::BPE::load(file);
  std::vector<int64_t> ids = bpe.encode(text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
  for (int64_t id : ids) std::printf("%lld\t%s\n", (long long)id, printable(bpe.token_bytes(id)).c_str());
  return 0;
}

std::vector<int64_t> with_bpe_fingerprint(const data::Tokenizer& tok, std::vector<int64_t> s) {
  if (const data::BPE* m = tok.bpe_model()) s.push_back(m->fingerprint());
  return s;
}

std::vector<int64_t> without_bpe_fingerprint(const data::Tokenizer& tok, std::vector<int64_t> s) {
  const data::BPE* m = tok.bpe_model();
  if (!m) return s;
  LD_CHECK(!s.empty() && s.back() == m->fingerprint(), "the data.tokenizer BPE file is not the one this checkpoint was ",
           "trained with (its merges differ; vocab ", m->vocab_size(), "): use the run's own tokenizer file");
  s.pop_back();
  return s;
}

std::optional<data::Tokenizer> bpe_tokenizer_from_config(Config& c, const std::string& mode) {
  std::string path = c.get<std::string>("data.tokenizer", "");
  if (path.empty()) return std::nullopt;
  if (mode != "bytes")
    c.fail_range("data.tokenizer", "'" + path + "' with data.mode = " + mode,
                 "\"\" unless data.mode is bytes (a BPE is byte-level: leave data.mode at bytes)");
  try {
    return data::Tokenizer::bpe(std::make_shared<const data::BPE>(data::BPE::load(path)));
  } catch (const Error& e) {
    LD_FAIL("config ", c.source(), ": 'data.tokenizer' = '", path, "' is not a usable BPE file (liandan tokenizer train): ",
            e.what());
  }
}

}  // namespace liandan::apps
