// Byte-level BPE: pre-splitting, training, encoding, the JSON file (core/data/bpe.h).
#include "core/data/bpe.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fileio.h"

namespace liandan::data {
namespace {

constexpr const char* kFormat = "liandan-bpe-1";

// ---------------------------------------------------------------- pre-splitting

enum class CharClass : uint8_t { letter, digit, space, other };

// The length and class of the character at p[0..n): a valid UTF-8 sequence (no overlong forms, no surrogates,
// <= U+10FFFF) or, for anything else, one byte of class `other`.
inline std::pair<size_t, CharClass> char_at(const unsigned char* p, size_t n) {
  unsigned char c = p[0];
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return {1, CharClass::letter};
    if (c >= '0' && c <= '9') return {1, CharClass::digit};
    if (c == ' ' || (c >= '\t' && c <= '\r')) return {1, CharClass::space};
    return {1, CharClass::other};
  }
  size_t len;
  char32_t cp;
  if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
  else return {1, CharClass::other};
  if (len > n) return {1, CharClass::other};
  for (size_t k = 1; k < len; ++k) {
    if ((p[k] & 0xC0) != 0x80) return {1, CharClass::other};
    cp = (cp << 6) | (p[k] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return {1, CharClass::other};
  bool punct = (cp >= 0xA0 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) ||
               (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) ||
               (cp >= 0xFF3B && cp <= 0xFF40) || (cp >= 0xFF5B && cp <= 0xFF65);
  return {len, punct ? CharClass::other : CharClass::letter};
}

// Calls f(chunk) for every pre-split chunk of `text`, in order.
template <class F>
void for_each_chunk(std::string_view text, F&& f) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  while (pos < n) {
    size_t start = pos;
    auto [len, cls] = char_at(p + pos, n - pos);
    if (p[pos] == ' ' && pos + 1 < n) {
      auto [len2, cls2] = char_at(p + pos + 1, n - pos - 1);
      if (cls2 != CharClass::space) {  // " word": the space leads the run that follows
        pos += 1;
        len = len2, cls = cls2;
      }
    }
    if (cls == CharClass::space) {
      size_t e = pos;
      while (e < n && char_at(p + e, n - e).second == CharClass::space) ++e;
      // The run's last space goes with the word after it (unless the run is only that space: handled above).
      if (e < n && p[e - 1] == ' ' && e - 1 > pos) --e;
      pos = e;
    } else {
      pos += len;
      while (pos < n) {
        auto [l, c] = char_at(p + pos, n - pos);
        if (c != cls) break;
        pos += l;
      }
    }
    f(text.substr(start, pos - start));
  }
}

struct PairHash {
  size_t operator()(uint64_t k) const { return size_t(k * 0x9E3779B97F4A7C15ull >> 16); }
};

}  // namespace

std::vector<std::string_view> bpe_pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  for_each_chunk(text, [&](std::string_view c) { out.push_back(c); });
  return out;
}

// ---------------------------------------------------------------- the vocabulary

BPE::BPE() {
  tokens_.reserve(256);
  for (int i = 0; i < 256; ++i) tokens_.emplace_back(1, char(uint8_t(i)));
}

namespace {
constexpr uint64_t kEmptySlot = ~uint64_t(0);
inline size_t slot_hash(uint64_t k, size_t mask) {  // both halves of the pair mixed into the low bits
  k *= 0x9E3779B97F4A7C15ull;
  return size_t(k ^ (k >> 29) ^ (k >> 47)) & mask;
}
}  // namespace

int32_t BPE::rank_of(int32_t a, int32_t b) const {
  if (slot_keys_.empty()) return -1;
  const uint64_t k = key(a, b);
  const size_t mask = slot_keys_.size() - 1;
  for (size_t i = slot_hash(k, mask);; i = (i + 1) & mask) {
    if (slot_keys_[i] == k) return slot_ranks_[i];
    if (slot_keys_[i] == kEmptySlot) return -1;
  }
}

void BPE::add_merge(int32_t a, int32_t b) {
  const int32_t id = int32_t(tokens_.size());
  LD_CHECK(id < kMaxVocab, "BPE: more than ", kMaxVocab, " tokens");
  LD_CHECK(a >= 0 && a < id && b >= 0 && b < id, "BPE: merge ", merges_.size(), " [", a, ", ", b,
           "] uses an id not defined before it (ids so far: 0..", id - 1, ")");
  const int32_t earlier = rank_of(a, b);
  LD_CHECK(earlier < 0, "BPE: merge ", merges_.size(), " [", a, ", ", b, "] repeats merge ", earlier);
  if (2 * (merges_.size() + 1) > slot_keys_.size()) {  // grow (and rehash) to keep the table at most half full
    std::vector<uint64_t> keys(std::max<size_t>(64, 2 * slot_keys_.size()), kEmptySlot);
    std::vector<int32_t> ranks(keys.size(), -1);
    const size_t mask = keys.size() - 1;
    for (size_t r = 0; r < merges_.size(); ++r) {
      uint64_t k = key(merges_[r].first, merges_[r].second);
      size_t i = slot_hash(k, mask);
      while (keys[i] != kEmptySlot) i = (i + 1) & mask;
      keys[i] = k, ranks[i] = int32_t(r);
    }
    slot_keys_.swap(keys);
    slot_ranks_.swap(ranks);
  }
  {
    const uint64_t k = key(a, b);
    const size_t mask = slot_keys_.size() - 1;
    size_t i = slot_hash(k, mask);
    while (slot_keys_[i] != kEmptySlot) i = (i + 1) & mask;
    slot_keys_[i] = k, slot_ranks_[i] = int32_t(merges_.size());
  }
  merges_.emplace_back(a, b);
  tokens_.push_back(tokens_[size_t(a)] + tokens_[size_t(b)]);
}

BPE BPE::from_merges(const std::vector<std::pair<int32_t, int32_t>>& merges) {
  LD_CHECK(int64_t(merges.size()) <= kMaxVocab - 256, "BPE: ", merges.size(), " merges, more than the ",
           kMaxVocab - 256, " allowed");
  BPE t;
  t.merges_.reserve(merges.size());
  t.tokens_.reserve(256 + merges.size());
  for (auto [a, b] : merges) t.add_merge(a, b);
  return t;
}

const std::string& BPE::token_bytes(int64_t id) const {
  LD_CHECK(id >= 0 && id < vocab_size(), "BPE: id ", id, " out of range for vocab size ", vocab_size());
  return tokens_[size_t(id)];
}

// ---------------------------------------------------------------- training

BPE BPE::train(std::string_view corpus, const BPETrainOptions& opt, BPETrainStats* stats) {
  LD_CHECK(opt.vocab_size >= 256 && opt.vocab_size <= kMaxVocab, "BPE::train: vocab_size must be in [256, ",
           kMaxVocab, "], got ", opt.vocab_size);
  LD_CHECK(opt.min_frequency >= 1, "BPE::train: min_frequency must be >= 1, got ", opt.min_frequency);
  BPETrainStats st;
  st.bytes = int64_t(corpus.size());

  // The distinct chunks and their counts (first-seen order: deterministic).
  std::unordered_map<std::string_view, int32_t> index;
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for_each_chunk(corpus, [&](std::string_view c) {
    ++st.chunks;
    auto [it, fresh] = index.emplace(c, int32_t(words.size()));
    if (fresh) {
      words.emplace_back(c.begin(), c.end());
      for (auto& s : words.back()) s = int32_t(uint8_t(s));
      freq.push_back(0);
    }
    ++freq[size_t(it->second)];
  });
  index = {};
  st.unique_chunks = int64_t(words.size());

  std::unordered_map<uint64_t, int64_t, PairHash> count;
  std::unordered_map<uint64_t, std::vector<int32_t>, PairHash> where;  // pair -> words that (may) hold it
  for (int32_t w = 0; w < int32_t(words.size()); ++w) {
    const auto& s = words[size_t(w)];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = key(s[i], s[i + 1]);
      count[k] += freq[size_t(w)];
      auto& v = where[k];
      if (v.empty() || v.back() != w) v.push_back(w);
    }
  }
  // Max-heap of (count, pair), most frequent first and, among equal counts, the smallest pair; stale entries
  // (count changed since pushed) are skipped when popped.
  using Entry = std::pair<int64_t, uint64_t>;
  auto worse = [](const Entry& x, const Entry& y) { return x.first != y.first ? x.first < y.first : x.second > y.second; };
  std::vector<Entry> init;
  init.reserve(count.size());
  for (auto& [k, c] : count) init.emplace_back(c, k);
  std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> heap(worse, std::move(init));

  BPE t;
  const int64_t target = opt.vocab_size - 256;
  std::vector<int32_t> stamp(words.size(), -1);
  std::vector<uint64_t> changed;
  std::vector<int32_t> merged;
  while (int64_t(t.merges_.size()) < target) {
    if (heap.empty()) {
      st.stopped_early = true;
      break;
    }
    auto [c, k] = heap.top();
    heap.pop();
    auto it = count.find(k);
    if (it == count.end() || it->second != c) continue;  // stale
    if (c < opt.min_frequency) {
      st.stopped_early = true;
      break;
    }
    const int32_t a = int32_t(k >> 32), b = int32_t(uint32_t(k)), id = int32_t(t.tokens_.size());
    const int32_t m = int32_t(t.merges_.size());
    t.add_merge(a, b);
    std::vector<int32_t> list = std::move(where[k]);
    where.erase(k);
    changed.clear();
    for (int32_t w : list) {
      if (stamp[size_t(w)] == m) continue;
      stamp[size_t(w)] = m;
      auto& s = words[size_t(w)];
      const int64_t f = freq[size_t(w)];
      // Rebuild the word with the pair merged, and update only the pairs around each occurrence: (p, a) ->
      // (p, id) and (b, n) -> (id, n). Back-to-back occurrences (a b a b) see the merged id as p, which undoes
      // the (id, a) counted by the occurrence before: the counts end as those of the new word.
      merged.clear();
      bool hit = false;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          hit = true;
          if (!merged.empty()) {
            const int32_t q = merged.back();
            count[key(q, a)] -= f;
            count[key(q, id)] += f;
            changed.push_back(key(q, a));
            changed.push_back(key(q, id));
            auto& v = where[key(q, id)];
            if (v.empty() || v.back() != w) v.push_back(w);
          }
          if (i + 2 < s.size()) {
            const int32_t n = s[i + 2];
            count[key(b, n)] -= f;
            count[key(id, n)] += f;
            changed.push_back(key(b, n));
            changed.push_back(key(id, n));
            auto& v = where[key(id, n)];
            if (v.empty() || v.back() != w) v.push_back(w);
          }
          merged.push_back(id);
          i += 2;
        } else {
          merged.push_back(s[i++]);
        }
      }
      if (hit) s.swap(merged);
    }
    count.erase(k);  // every occurrence is merged
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    for (uint64_t p : changed) {
      auto ci = count.find(p);
      if (ci == count.end()) continue;
      if (ci->second <= 0) count.erase(ci);
      else heap.emplace(ci->second, p);
    }
  }
  st.merges = int64_t(t.merges_.size());
  if (stats) *stats = st;
  return t;
}

// ---------------------------------------------------------------- encoding

void BPE::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  const size_t n = chunk.size();
  const auto* p = reinterpret_cast<const unsigned char*>(chunk.data());
  if (n == 0) return;
  if (n == 1 || merges_.empty()) {
    for (size_t i = 0; i < n; ++i) out.push_back(int32_t(p[i]));
    return;
  }
  constexpr size_t kShortChunk = 64;
  if (n <= kShortChunk) {
    // Short chunks: the rank of every adjacent pair in r[]; merge the lowest-ranked pair's occurrences left to
    // right, recompute the ranks beside each merged symbol, repeat.
    constexpr int32_t kNone = INT32_MAX;
    int32_t sy[kShortChunk], r[kShortChunk], merged_at[kShortChunk];
    size_t len = n;
    for (size_t i = 0; i < n; ++i) sy[i] = int32_t(p[i]);
    for (size_t i = 0; i + 1 < n; ++i) {
      int32_t q = rank_of(sy[i], sy[i + 1]);
      r[i] = q < 0 ? kNone : q;
    }
    r[n - 1] = kNone;
    auto rank_or_none = [&](size_t i) {
      int32_t q = rank_of(sy[i], sy[i + 1]);
      return q < 0 ? kNone : q;
    };
    for (;;) {
      int32_t best = kNone;
      for (size_t i = 0; i + 1 < len; ++i) best = std::min(best, r[i]);
      if (best == kNone) break;
      const int32_t id = 256 + best;
      size_t o = 0, m = 0;
      for (size_t i = 0; i < len;) {
        if (r[i] == best && i + 1 < len) {
          sy[o] = id, merged_at[m++] = int32_t(o++), i += 2;
        } else {
          sy[o] = sy[i], r[o] = r[i], ++o, ++i;
        }
      }
      len = o;
      for (size_t k = 0; k < m; ++k) {
        size_t j = size_t(merged_at[k]);
        if (j > 0) r[j - 1] = rank_or_none(j - 1);
        r[j] = j + 1 < len ? rank_or_none(j) : kNone;
      }
    }
    out.insert(out.end(), sy, sy + len);
    return;
  }
  // Long chunks: a linked list of symbols and a min-heap of (rank, position); an entry is stale when its
  // position no longer holds that merge's pair. Equal ranks pop leftmost first: the same result as above.
  std::vector<int32_t> sym(n), next(n), prev(n);
  for (size_t i = 0; i < n; ++i) sym[i] = int32_t(p[i]), next[i] = int32_t(i + 1), prev[i] = int32_t(i) - 1;
  next[n - 1] = -1;
  using Entry = std::pair<int32_t, int32_t>;  // (rank, position)
  std::vector<Entry> init;
  for (size_t i = 0; i + 1 < n; ++i)
    if (int32_t r = rank_of(sym[i], sym[i + 1]); r >= 0) init.emplace_back(r, int32_t(i));
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap(std::greater<Entry>(), std::move(init));
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    auto [r, i] = heap.top();
    heap.pop();
    if (!alive[size_t(i)]) continue;
    int32_t j = next[size_t(i)];
    if (j < 0) continue;
    auto [a, b] = merges_[size_t(r)];
    if (sym[size_t(i)] != a || sym[size_t(j)] != b) continue;  // stale
    sym[size_t(i)] = 256 + r;
    alive[size_t(j)] = 0;
    next[size_t(i)] = next[size_t(j)];
    if (next[size_t(j)] >= 0) prev[size_t(next[size_t(j)])] = i;
    if (int32_t h = prev[size_t(i)]; h >= 0)
      if (int32_t q = rank_of(sym[size_t(h)], sym[size_t(i)]); q >= 0) heap.emplace(q, h);
    if (int32_t k = next[size_t(i)]; k >= 0)
      if (int32_t q = rank_of(sym[size_t(i)], sym[size_t(k)]); q >= 0) heap.emplace(q, i);
  }
  for (int32_t i = 0; i >= 0; i = next[size_t(i)]) out.push_back(sym[size_t(i)]);
}

namespace {

inline uint64_t chunk_hash(std::string_view c) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ c.size();
  size_t i = 0;
  for (; i + 8 <= c.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, c.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  std::memcpy(&w, c.data() + i, c.size() - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

}  // namespace

std::vector<int64_t> BPE::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 16);
  // Cache of the chunks seen in this call (open addressing on the chunk's hash): where the chunk is in `text`,
  // and where its ids are in `store`.
  struct Slot {
    uint64_t hash = 0;
    size_t pos = 0;
    uint32_t len = 0, at = 0, count = 0;
    bool used = false;
  };
  std::vector<Slot> table(1024);
  size_t used = 0;
  std::vector<int32_t> store;
  auto insert = [](std::vector<Slot>& t, const Slot& s) {
    const size_t mask = t.size() - 1;
    size_t i = size_t(s.hash) & mask;
    while (t[i].used) i = (i + 1) & mask;
    t[i] = s;
  };
  for_each_chunk(text, [&](std::string_view c) {
    if (c.size() > (size_t(1) << 31) || store.size() > (size_t(1) << 31)) {  // beyond the cache's 32-bit fields
      size_t at = store.size();
      encode_chunk(c, store);
      ids.insert(ids.end(), store.begin() + ptrdiff_t(at), store.end());
      store.resize(at);
      return;
    }
    const uint64_t h = chunk_hash(c);
    const size_t mask = table.size() - 1;
    size_t i = size_t(h) & mask;
    for (; table[i].used; i = (i + 1) & mask) {
      const Slot& s = table[i];
      if (s.hash == h && s.len == c.size() && std::memcmp(text.data() + s.pos, c.data(), c.size()) == 0) {
        const int32_t* p = store.data() + s.at;
        ids.insert(ids.end(), p, p + s.count);
        return;
      }
    }
    Slot s;
    s.hash = h, s.pos = size_t(c.data() - text.data()), s.len = uint32_t(c.size()), s.at = uint32_t(store.size());
    s.used = true;
    encode_chunk(c, store);
    s.count = uint32_t(store.size() - s.at);
    ids.insert(ids.end(), store.begin() + ptrdiff_t(s.at), store.end());
    table[i] = s;
    if (2 * ++used > table.size()) {
      std::vector<Slot> bigger(2 * table.size());
      for (const Slot& x : table)
        if (x.used) insert(bigger, x);
      table.swap(bigger);
    }
  });
  return ids;
}

std::string BPE::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    LD_CHECK(id >= 0 && id < vocab_size(), "BPE::decode: id ", id, " out of range for vocab size ", vocab_size());
    out += tokens_[size_t(id)];
  }
  return out;
}

// ---------------------------------------------------------------- the JSON file

int64_t BPE::fingerprint() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bits, over the merges' ids as 8 bytes each
  for (auto [a, b] : merges_)
    for (uint64_t v : {uint64_t(uint32_t(a)), uint64_t(uint32_t(b))})
      for (int i = 0; i < 4; ++i) h = (h ^ ((v >> (8 * i)) & 0xFF)) * 1099511628211ull;
  return int64_t(h >> 1);
}

std::string BPE::to_json() const {
  std::ostringstream o;
  o << "{\"format\": \"" << kFormat << "\", \"vocab_size\": " << vocab_size() << ", \"merges\": [";
  for (size_t i = 0; i < merges_.size(); ++i)
    o << (i ? ",\n  " : "\n  ") << '[' << merges_[i].first << ", " << merges_[i].second << ']';
  o << (merges_.empty() ? "]}\n" : "\n]}\n");
  return o.str();
}

void BPE::save(const std::string& path) const { write_file_atomic(path, to_json()); }

namespace {

// A JSON value for an error message, short and without recursion: scalars as written (cut at 40 characters),
// arrays and objects by their kind and size (dump() of a deeply nested value would recurse once per level).
std::string brief(const nlohmann::json& v, bool top = true) {
  if (v.is_array()) {
    if (top && v.size() <= 3) {  // a short array: its elements, one level deep
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + brief(v[i], false);
      return out + "]";
    }
    return "an array of " + std::to_string(v.size());
  }
  if (v.is_object()) return "an object of " + std::to_string(v.size()) + " keys";
  std::string d = v.dump();
  return d.size() > 40 ? d.substr(0, 40) + "..." : d;
}

}  // namespace

BPE BPE::from_json(std::string_view text, const std::string& source) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    LD_FAIL(source, ": not a BPE tokenizer file (invalid JSON: ", e.what(), ")");
  }
  LD_CHECK(j.is_object(), source, ": a BPE tokenizer file must be a JSON object {\"format\": \"", kFormat,
           "\", \"vocab_size\": N, \"merges\": [[a, b], ...]}, got ", j.type_name());
  for (auto& [k, v] : j.items())
    LD_CHECK(k == "format" || k == "vocab_size" || k == "merges", source, ": unknown key '", k,
             "' (a BPE file has format, vocab_size and merges)");
  LD_CHECK(j.contains("format") && j["format"].is_string(), source,
           ": 'format' is missing or not a string (expected \"", kFormat, "\")");
  const std::string format = j["format"].get<std::string>();
  LD_CHECK(format == kFormat, source, ": format '", format, "' is not ", kFormat);
  LD_CHECK(j.contains("vocab_size"), source, ": 'vocab_size' is missing");
  const json& vs = j["vocab_size"];
  LD_CHECK(vs.is_number_integer(), source, ": 'vocab_size' must be an integer, got ", brief(vs));
  const bool too_big = vs.is_number_unsigned() ? vs.get<uint64_t>() > uint64_t(kMaxVocab) : vs.get<int64_t>() > kMaxVocab;
  LD_CHECK(!too_big && vs.get<int64_t>() >= 256, source, ": 'vocab_size' must be in [256, ", kMaxVocab, "], got ",
           brief(vs));
  const int64_t vocab = vs.get<int64_t>();
  LD_CHECK(j.contains("merges") && j["merges"].is_array(), source, ": 'merges' is missing or not an array");
  const json& ms = j["merges"];
  LD_CHECK(int64_t(ms.size()) == vocab - 256, source, ": vocab_size ", vocab, " needs ", vocab - 256,
           " merges, the file has ", ms.size());
  std::vector<std::pair<int32_t, int32_t>> merges;
  merges.reserve(ms.size());
  for (size_t i = 0; i < ms.size(); ++i) {
    const json& m = ms[i];
    LD_CHECK(m.is_array() && m.size() == 2, source, ": merge ", i, " must be a pair [a, b], got ", brief(m));
    int64_t ab[2];
    for (int k = 0; k < 2; ++k) {
      const json& x = m[size_t(k)];
      const int64_t limit = 256 + int64_t(i);  // ids defined before merge i
      bool ok = x.is_number_integer() &&
                (x.is_number_unsigned() ? x.get<uint64_t>() < uint64_t(limit) : x.get<int64_t>() >= 0 && x.get<int64_t>() < limit);
      LD_CHECK(ok, source, ": merge ", i, " ", brief(m), ": ", brief(x),
               " is not an id defined before it (an integer in [0, ", limit - 1, "])");
      ab[k] = x.get<int64_t>();
    }
    merges.emplace_back(int32_t(ab[0]), int32_t(ab[1]));
  }
  try {
    return from_merges(merges);
  } catch (const Error& e) {
    LD_FAIL(source, ": ", e.what());
  }
}

BPE BPE::load(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);  // a missing file or a directory: read_regular_file says so
  LD_CHECK(ec || size <= uint64_t(kMaxFileBytes), "BPE file ", path, " is ", size, " bytes, more than the ",
           kMaxFileBytes, " a tokenizer file may have");
  return from_json(read_regular_file(path), path);
}

}  // namespace liandan::data
