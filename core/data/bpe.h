#pragma once
// Byte-level BPE (byte-pair encoding) tokenizer: the 256 byte values are ids 0..255, and merge i (a pair of
// ids, both defined before it) is id 256 + i. Every byte string encodes, and decode(encode(s)) == s for any
// bytes (invalid UTF-8 and NUL included).
//
// Pre-splitting (bpe_pretokenize, GPT-2 style, so that merges never cross word boundaries): the text is cut
// into chunks of one class — letters (ASCII letters and every valid UTF-8 character >= U+0080 except the
// CJK/general punctuation blocks), digits (0-9), whitespace (space, \t, \n, \r, \v, \f) and other (ASCII
// punctuation, the punctuation blocks, and each byte of invalid UTF-8) — and a single space ' ' before a
// letter, digit or other run belongs to that run (" the", " 42", " ..."), as in GPT-2. A whitespace run keeps
// all of its characters but that space. Chunks are encoded independently.
//
// Training (BPE::train): count the chunks of the corpus, then repeatedly merge the most frequent adjacent pair
// of ids (pairs counted with overlaps, weighted by chunk frequency; ties go to the smallest pair (a, b)), until
// vocab_size is reached or no pair occurs min_frequency times. A merge replaces the pair's occurrences left to
// right, without overlap. Encoding applies the merges the same way, by rank (a min-heap over a chunk's pairs),
// with a per-call cache of the chunks already encoded.
//
// File format (JSON, written atomically):
//   {"format": "liandan-bpe-1", "vocab_size": N, "merges": [[a, b], ...]}   (N - 256 merges)
// Loading checks everything — format, types, vocab_size == 256 + merges, ids defined before their merge,
// repeated merges, sizes — and any fault is a liandan::Error naming the file.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace liandan::data {

// The pre-split chunks of `text`, as views into it, in order; their concatenation is `text`.
std::vector<std::string_view> bpe_pretokenize(std::string_view text);

struct BPETrainOptions {
  int64_t vocab_size = 1024;  // 256 + the number of merges, at most kMaxVocab
  int64_t min_frequency = 2;  // a pair seen fewer times is not merged (training stops there)
};

struct BPETrainStats {
  int64_t bytes = 0;          // corpus size
  int64_t chunks = 0;         // pre-split chunks
  int64_t unique_chunks = 0;  // distinct chunks (what training works on)
  int64_t merges = 0;         // merges learned
  bool stopped_early = false; // no pair left with min_frequency occurrences before vocab_size
};

class BPE {
 public:
  static constexpr int64_t kMaxVocab = int64_t(1) << 22;  // 4,194,304: larger is refused (files and training)
  static constexpr int64_t kMaxFileBytes = int64_t(1) << 28;

  BPE();  // no merges: vocab 256, the bytes tokenizer
  static BPE train(std::string_view corpus, const BPETrainOptions& opt, BPETrainStats* stats = nullptr);
  // Validates: each merge's ids are < 256 + its index, no merge repeats an earlier one, size <= kMaxVocab.
  static BPE from_merges(const std::vector<std::pair<int32_t, int32_t>>& merges);
  // Parses the JSON format above; `source` names the text in errors.
  static BPE from_json(std::string_view json, const std::string& source = "<json>");
  static BPE load(const std::string& path);

  std::string to_json() const;
  void save(const std::string& path) const;  // write_file_atomic

  int64_t vocab_size() const { return int64_t(tokens_.size()); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  // 63 bits of an FNV-1a hash of the merges: two files with the same merges in the same order have the same one.
  int64_t fingerprint() const;
  // The bytes of token `id` (out of range: an Error).
  const std::string& token_bytes(int64_t id) const;

  std::vector<int64_t> encode(std::string_view text) const;
  // One pre-split chunk (no splitting): the merges applied to its bytes.
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;
  // Ids out of range are an Error naming the id and the vocab size.
  std::string decode(const std::vector<int64_t>& ids) const;

 private:
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void add_merge(int32_t a, int32_t b);
  int32_t rank_of(int32_t a, int32_t b) const;  // the merge index of (a, b), or -1

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> tokens_;  // id -> bytes
  // pair -> merge index (new id = 256 + index): open addressing, linear probing, at most half full.
  std::vector<uint64_t> slot_keys_;
  std::vector<int32_t> slot_ranks_;
};

}  // namespace liandan::data
