#include "core/data/text.h"

#include "core/data/bpe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace liandan::data {

namespace {

std::string read_file(const fs::path& p, const char* op) {
  std::ifstream f(p, std::ios::binary | std::ios::ate);
  LD_CHECK(f.good(), op, ": cannot open ", p.string());
  std::string s(size_t(f.tellg()), '\0');
  f.seekg(0);
  f.read(s.data(), std::streamsize(s.size()));
  LD_CHECK(f.good(), op, ": error reading ", p.string());
  return s;
}

// The regular files of `path` (itself if it is a file), sorted by path; symbolic links below a directory
// are skipped (the fortune packages link *.u8 to the real files, which would double the corpus).
std::vector<fs::path> list_files(const std::string& path, const char* op, bool skip_dat) {
  std::error_code ec;
  auto st = fs::status(path, ec);
  LD_CHECK(!ec && fs::exists(st), op, ": ", path, " not found");
  if (fs::is_regular_file(st)) return {fs::path(path)};
  LD_CHECK(fs::is_directory(st), op, ": ", path, " is neither a file nor a directory");
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(path)) {
    if (e.is_symlink() || !e.is_regular_file()) continue;
    if (skip_dat && e.path().extension() == ".dat") continue;
    files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  LD_CHECK(!files.empty(), op, ": no files under ", path);
  return files;
}

// Removes ANSI escape sequences and backspace overstrikes; trims trailing whitespace and leading newlines.
std::string clean_fortune(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\x1b') {  // ESC [ params final-byte (CSI), or a lone ESC
      if (i + 1 < s.size() && s[i + 1] == '[') {
        i += 2;
        while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7e)) ++i;
      }
      continue;
    }
    if (c == '\b') {  // "X\bY" prints Y over X: drop X (one UTF-8 character)
      while (!out.empty() && (uint8_t(out.back()) & 0xC0) == 0x80) out.pop_back();
      if (!out.empty()) out.pop_back();
      continue;
    }
    out += c;
  }
  while (!out.empty() && std::strchr(" \t\r\n", out.back())) out.pop_back();
  size_t lead = out.find_first_not_of('\n');
  return lead == std::string::npos ? std::string() : out.substr(lead);
}

}  // namespace

std::string read_text(const std::string& path) {
  std::string out;
  for (const auto& p : list_files(path, "read_text", false)) {
    out += read_file(p, "read_text");
    if (!out.empty() && out.back() != '\n') out += '\n';
  }
  return out;
}

std::vector<std::string> read_fortunes(const std::string& path) {
  std::vector<std::string> entries;
  for (const auto& p : list_files(path, "read_fortunes", true)) {
    std::string text = read_file(p, "read_fortunes"), cur;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t eol = text.find('\n', pos);
      size_t end = eol == std::string::npos ? text.size() : eol;
      std::string_view line(text.data() + pos, end - pos);
      if (line == "%" || line == "%\r") {
        if (std::string e = clean_fortune(cur); !e.empty()) entries.push_back(std::move(e));
        cur.clear();
      } else {
        cur.append(line).push_back('\n');
      }
      pos = end + 1;
    }
    if (std::string e = clean_fortune(cur); !e.empty()) entries.push_back(std::move(e));
  }
  return entries;
}

std::string fortunes_corpus(const std::string& path) {
  std::string out;
  for (const auto& e : read_fortunes(path)) out += e + "\n\n";
  if (!out.empty()) out.pop_back();
  return out;
}

// ---------------------------------------------------------------- UTF-8

std::u32string utf8_decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  auto byte = [&](size_t k) { return uint8_t(s[k]); };
  while (i < n) {
    uint8_t b = byte(i);
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    // Lead byte: the sequence length and the allowed range of the second byte (which excludes overlong
    // forms, surrogates and code points past U+10FFFF); later bytes are 80..BF.
    int len = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b >= 0xE0 && b <= 0xEF) len = 3, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4) len = 4, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    bool ok = len > 0 && i + size_t(len) <= n && byte(i + 1) >= lo && byte(i + 1) <= hi;
    for (int k = 2; ok && k < len; ++k) ok = (byte(i + size_t(k)) & 0xC0) == 0x80;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = b & (0xFF >> (len + 1));
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (byte(i + size_t(k)) & 0x3F);
    out.push_back(cp);
    i += size_t(len);
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    LD_CHECK(cp <= 0x10FFFF, "utf8_encode: code point ", uint32_t(cp), " is past U+10FFFF");
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(std::u32string_view cps) {
  std::string out;
  for (char32_t c : cps) utf8_append(out, c);
  return out;
}

// ---------------------------------------------------------------- Tokenizer

Tokenizer Tokenizer::bytes() { return Tokenizer(); }

Tokenizer Tokenizer::chars(std::string_view corpus) {
  std::u32string cps = utf8_decode(corpus);
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  return from_vocab(utf8_encode(cps));
}

Tokenizer Tokenizer::from_vocab(std::string_view vocab_utf8) {
  Tokenizer t;
  t.mode_ = TextMode::chars;
  t.chars_ = utf8_decode(vocab_utf8);
  LD_CHECK(!t.chars_.empty(), "Tokenizer::from_vocab: empty vocabulary");
  for (size_t i = 0; i < t.chars_.size(); ++i)
    LD_CHECK(t.index_.emplace(t.chars_[i], int64_t(i)).second, "Tokenizer::from_vocab: character U+", std::hex,
             uint32_t(t.chars_[i]), " appears twice");
  return t;
}

Tokenizer Tokenizer::bpe(std::shared_ptr<const BPE> model) {
  LD_CHECK(model != nullptr, "Tokenizer::bpe: no BPE model");
  Tokenizer t;
  t.mode_ = TextMode::bpe;
  t.bpe_ = std::move(model);
  return t;
}

int64_t Tokenizer::vocab_size() const {
  return mode_ == TextMode::bytes ? 256 : mode_ == TextMode::bpe ? bpe_->vocab_size() : int64_t(chars_.size());
}

std::string Tokenizer::vocab() const { return mode_ == TextMode::chars ? utf8_encode(chars_) : std::string(); }

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  if (mode_ == TextMode::bytes) {
    for (char c : text) ids.push_back(uint8_t(c));
    return ids;
  }
  if (mode_ == TextMode::bpe) return bpe_->encode(text);
  std::u32string cps = utf8_decode(text);
  ids.reserve(cps.size());
  size_t offset = 0;  // byte offset of the character, for the error message
  for (char32_t c : cps) {
    auto it = index_.find(c);
    if (it == index_.end()) {
      std::string ch;
      utf8_append(ch, c);
      LD_FAIL("Tokenizer::encode: character '", ch, "' (U+", std::hex, uint32_t(c), std::dec, ") at byte ", offset,
              " is not in the vocabulary of ", chars_.size(), " characters");
    }
    ids.push_back(it->second);
    std::string ch;
    utf8_append(ch, c);
    offset += ch.size();
  }
  return ids;
}

Tensor Tokenizer::encode_tensor(std::string_view text) const {
  std::vector<int64_t> ids = encode(text);
  return from_vector(ids, {int64_t(ids.size())});
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  if (mode_ == TextMode::bpe) return bpe_->decode(ids);
  std::string out;
  for (int64_t id : ids) {
    LD_CHECK(id >= 0 && id < vocab_size(), "Tokenizer::decode: id ", id, " out of range for vocab size ",
             vocab_size());
    if (mode_ == TextMode::bytes) out += char(uint8_t(id));
    else utf8_append(out, chars_[size_t(id)]);
  }
  return out;
}

std::string Tokenizer::decode(const Tensor& ids) const {
  LD_CHECK(ids.dtype() == DType::i64, "Tokenizer::decode: expected i64 ids, got ", dtype_name(ids.dtype()));
  Tensor c = ids.contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  return decode(std::vector<int64_t>(p, p + c.numel()));
}

// ---------------------------------------------------------------- splits and windows

TokenSplit split_tokens(const Tensor& tokens, double val_fraction) {
  LD_CHECK(tokens.dim() == 1 && tokens.dtype() == DType::i64, "split_tokens: expected 1-D i64 tokens, got ",
           dtype_name(tokens.dtype()), " ", shape_str(tokens.shape()));
  LD_CHECK(val_fraction >= 0 && val_fraction < 1, "split_tokens: val_fraction must be in [0, 1), got ", val_fraction);
  int64_t n = tokens.size(0), v = int64_t(std::llround(double(n) * val_fraction));
  return {tokens.narrow(0, 0, n - v), tokens.narrow(0, n - v, v)};
}

Tensor random_windows(const Tensor& tokens, int64_t batch, int64_t length, Generator& gen) {
  LD_CHECK(tokens.dim() == 1 && tokens.dtype() == DType::i64, "random_windows: expected 1-D i64 tokens, got ",
           dtype_name(tokens.dtype()), " ", shape_str(tokens.shape()));
  int64_t n = tokens.size(0);
  LD_CHECK(batch >= 1, "random_windows: batch must be >= 1, got ", batch);
  LD_CHECK(length >= 1 && n - 1 >= length, "random_windows: ", n, " tokens are too few for windows of ",
           length, " + 1");
  Tensor starts = randint(0, n - length, {batch}, gen);
  Tensor src = tokens.contiguous(), out = empty({batch, length + 1}, DType::i64);
  const int64_t *s = starts.data_ptr<int64_t>(), *t = src.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) std::memcpy(o + b * (length + 1), t + s[b], size_t(length + 1) * sizeof(int64_t));
  return out;
}

TextWindows::TextWindows(Tensor tokens, int64_t length, int64_t stride)
    : tokens_(tokens.contiguous()), length_(length), stride_(stride) {
  LD_CHECK(tokens_.dim() == 1 && tokens_.dtype() == DType::i64, "TextWindows: expected 1-D i64 tokens, got ",
           dtype_name(tokens_.dtype()), " ", shape_str(tokens_.shape()));
  LD_CHECK(length >= 1 && stride >= 1, "TextWindows: length and stride must be >= 1, got ", length, ", ", stride);
  LD_CHECK(tokens_.size(0) >= length + 1, "TextWindows: ", tokens_.size(0), " tokens are too few for windows of ",
           length, " + 1");
  count_ = (tokens_.size(0) - length - 1) / stride + 1;
}

Batch TextWindows::get(const std::vector<int64_t>& indices) const {
  Tensor out = empty({int64_t(indices.size()), length_ + 1}, DType::i64);
  const int64_t* t = tokens_.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    LD_CHECK(indices[i] >= 0 && indices[i] < count_, "TextWindows: index ", indices[i], " out of range for ", count_,
             " windows");
    std::memcpy(o + int64_t(i) * (length_ + 1), t + indices[i] * stride_, size_t(length_ + 1) * sizeof(int64_t));
  }
  Batch b;
  b.add("tokens", out);
  return b;
}

}  // namespace liandan::data
