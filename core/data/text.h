#pragma once
// Text corpora for language models: read any file or directory, tokenize as bytes (vocab 256) or as
// UTF-8 characters (vocab = the corpus's distinct characters), split train/validation by position, and
// cut windows of L+1 tokens (inputs tokens[0..L), targets tokens[1..L]).
//
// Debian's `fortunes` and `fortunes-zh` packages (scripts/get-data text) are real English and Chinese
// corpora in /usr/share/games/fortunes; read_fortunes() parses their '%'-separated format.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/data/loader.h"
#include "core/random.h"

namespace liandan::data {

// A file's bytes, or, for a directory, the bytes of every regular file below it (recursively; symbolic
// links skipped), in sorted path order, each followed by '\n' unless it already ends with one.
std::string read_text(const std::string& path);

// Fortune files: entries separated by lines holding only '%'. `path` is a file or a directory (its regular
// files, sorted, skipping the *.dat index files and the *.u8 symbolic links). Each entry is cleaned: ANSI
// escape sequences (ESC [ ... letter, used for colour in `chinese`) and backspace overstrikes ("_\bX")
// are removed, trailing whitespace is trimmed; empty entries are dropped.
std::vector<std::string> read_fortunes(const std::string& path);
// The entries joined by a blank line ("\n\n"), ending with "\n": a corpus for a language model.
std::string fortunes_corpus(const std::string& path);

// UTF-8. Decoding never fails: each byte of an invalid or truncated sequence (and overlong forms,
// surrogates, values > U+10FFFF) becomes U+FFFD, so any file has a decoding.
std::u32string utf8_decode(std::string_view s);
std::string utf8_encode(std::u32string_view cps);
void utf8_append(std::string& out, char32_t cp);

enum class TextMode { bytes, chars, bpe };

class BPE;  // core/data/bpe.h

class Tokenizer {
 public:
  // Bytes: token = byte value, vocab 256; every string encodes, and decode(encode(s)) == s.
  static Tokenizer bytes();
  // Characters: the distinct code points of `corpus`, in increasing code point order (deterministic).
  static Tokenizer chars(std::string_view corpus);
  // Characters with the vocabulary given as a UTF-8 string of its characters in id order (vocab()).
  static Tokenizer from_vocab(std::string_view vocab_utf8);
  // Byte-level BPE (core/data/bpe.h): every string encodes, and decode(encode(s)) == s.
  static Tokenizer bpe(std::shared_ptr<const BPE> model);

  TextMode mode() const { return mode_; }
  int64_t vocab_size() const;
  // Chars mode: the vocabulary as a UTF-8 string in id order (store it to rebuild the tokenizer); bytes, bpe: "".
  std::string vocab() const;
  bool contains(char32_t cp) const {
    return mode_ == TextMode::bpe ? true : mode_ == TextMode::bytes ? cp < 256 : index_.count(cp) > 0;
  }

  // Chars mode: a character outside the vocabulary is an error naming it and its byte offset.
  std::vector<int64_t> encode(std::string_view text) const;
  Tensor encode_tensor(std::string_view text) const;  // i64 [n]
  // Ids out of range are an error naming the id and the vocab size.
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string decode(const Tensor& ids) const;  // i64, any shape, row-major order
  // The BPE model of a bpe tokenizer, else null.
  const BPE* bpe_model() const { return bpe_.get(); }

 private:
  TextMode mode_ = TextMode::bytes;
  std::u32string chars_;
  std::unordered_map<char32_t, int64_t> index_;
  std::shared_ptr<const BPE> bpe_;
};

// Train/validation split by position: train = tokens[0, n - v), val = tokens[n - v, n) with
// v = round(n · val_fraction). Both are i64 [*] views of `tokens` (1-D i64).
struct TokenSplit {
  Tensor train, val;
};
TokenSplit split_tokens(const Tensor& tokens, double val_fraction);

// `batch` windows of length+1 tokens at independent uniform starts in [0, n - length - 1]: i64 [batch,
// length + 1]. Inputs are [:, :length], targets [:, 1:].
Tensor random_windows(const Tensor& tokens, int64_t batch, int64_t length, Generator& gen);

// Windows of length+1 tokens starting every `stride` tokens (stride = length tiles the text with one token of
// overlap, for a complete validation pass): element i = tokens[i·stride, i·stride + length + 1).
// Field "tokens": i64 [B, length + 1].
class TextWindows : public Dataset {
 public:
  TextWindows(Tensor tokens, int64_t length, int64_t stride);
  int64_t size() const override { return count_; }
  Batch get(const std::vector<int64_t>& indices) const override;

 private:
  Tensor tokens_;
  int64_t length_, stride_, count_;
};

}  // namespace liandan::data
