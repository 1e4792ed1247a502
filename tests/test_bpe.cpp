// Byte-level BPE (core/data/bpe.h): pre-splitting, the exact merges of a hand-computed example, agreement with
// a naive reference encoder, byte round trips for any input, the JSON file and a fuzz of damaged ones, the
// Tokenizer wrapper, and `liandan tokenizer train` + `liandan train` of lm/text_cls with data.tokenizer.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "tests/test_files.h"
#include "core/data/bpe.h"
#include "core/data/text.h"
#include "core/error.h"
#include "core/tensor.h"
#include "tests/process.h"

using namespace liandan;
using namespace liandan::data;
namespace fs = std::filesystem;

namespace {

using liandan::testing::check_error;
using liandan::testing::read_bytes;
using liandan::testing::TempDir;
using liandan::testing::write_bytes;




// English-like text (deterministic): frequent words from a list and invented words of 1-4 syllables, with
// spaces, punctuation, numbers and line breaks; thousands of distinct words, so training has pairs left.
std::string english_corpus(size_t bytes, uint32_t seed = 1) {
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "then",
                         "there", "these", "those", "thinking", "that", "this", "is", "a", "an", "of"};
  const char* syl[] = {"ka", "ri", "to", "men", "sal", "ver", "qu", "ion", "ing", "ed", "pro", "tra", "ble", "st",
                       "ou", "gh", "ch", "ment", "ex", "un", "re", "con", "al", "ly", "er", "th", "in", "es"};
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < bytes) {
    uint32_t kind = rng() % 10;
    if (kind < 5) {
      s += words[rng() % (sizeof words / sizeof *words)];
    } else if (kind < 9) {
      int n = 1 + int(rng() % 4);
      for (int i = 0; i < n; ++i) s += syl[rng() % (sizeof syl / sizeof *syl)];
    } else {
      s += std::to_string(rng() % 2000);
    }
    uint32_t r = rng() % 20;
    s += r == 0 ? ".\n" : r == 1 ? ", " : r == 2 ? "\n\n" : r == 3 ? "! " : " ";
  }
  return s;
}

// The definition of BPE encoding, slowly: every merge in order, applied left to right without overlap to each
// chunk.
std::vector<int64_t> naive_encode(const BPE& bpe, std::string_view text) {
  std::vector<int64_t> out;
  for (std::string_view c : bpe_pretokenize(text)) {
    std::vector<int64_t> s;
    for (unsigned char b : c) s.push_back(b);
    for (size_t m = 0; m < bpe.merges().size(); ++m) {
      auto [a, b] = bpe.merges()[m];
      std::vector<int64_t> t;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) t.push_back(256 + int64_t(m)), i += 2;
        else t.push_back(s[i++]);
      }
      s.swap(t);
    }
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

// The definition of BPE training, slowly: every step recounts all adjacent pairs (overlaps included) of the
// distinct chunks, weighted by their counts, and merges the most frequent (ties: the smallest pair).
std::vector<std::pair<int32_t, int32_t>> naive_train(std::string_view corpus, int64_t vocab, int64_t min_freq = 2) {
  std::map<std::string_view, int64_t> counts;
  for (auto c : bpe_pretokenize(corpus)) ++counts[c];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (auto& [c, n] : counts) {
    words.emplace_back();
    for (unsigned char b : c) words.back().push_back(b);
    freq.push_back(n);
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  while (int64_t(merges.size()) + 256 < vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pc;
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t i = 0; i + 1 < words[w].size(); ++i) pc[{words[w][i], words[w][i + 1]}] += freq[w];
    std::pair<int32_t, int32_t> best{-1, -1};
    int64_t bc = 0;
    for (auto& [p, c] : pc)
      if (c > bc) bc = c, best = p;  // std::map order: the first of equal counts is the smallest pair
    if (bc < min_freq) break;
    int32_t id = 256 + int32_t(merges.size());
    merges.push_back(best);
    for (auto& s : words) {
      std::vector<int32_t> t;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == best.first && s[i + 1] == best.second) t.push_back(id), i += 2;
        else t.push_back(s[i++]);
      }
      s.swap(t);
    }
  }
  return merges;
}

const std::string kChinese =
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n"
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n红豆生南国，春来发几枝。愿君多采撷，此物最相思。\n";

}  // namespace

TEST_CASE("bpe_pretokenize: GPT-2-style chunks (a leading space joins the word), nothing lost") {
  auto split = [](std::string_view s) {
    std::vector<std::string> v;
    for (auto c : bpe_pretokenize(s)) v.emplace_back(c);
    return v;
  };
  CHECK(split("Hello world, 42 times!\n\n  x") ==
        std::vector<std::string>{"Hello", " world", ",", " 42", " times", "!", "\n\n ", " x"});
  CHECK(split("a  b") == std::vector<std::string>{"a", " ", " b"});
  CHECK(split("end   ") == std::vector<std::string>{"end", "   "});
  CHECK(split(" ...x1") == std::vector<std::string>{" ...", "x", "1"});
  CHECK(split("你好，世界。ok") == std::vector<std::string>{"你好", "，", "世界", "。", "ok"});
  CHECK(split("café") == std::vector<std::string>{"café"});
  // Invalid UTF-8 bytes are `other`, one class with ASCII punctuation; NUL too.
  CHECK(split(std::string("ab\xff\xfe!cd\0e", 9)) ==
        std::vector<std::string>{"ab", "\xff\xfe!", "cd", std::string("\0", 1), "e"});
  CHECK(split("").empty());
  // The chunks always concatenate to the input.
  std::mt19937 rng(7);
  for (int t = 0; t < 200; ++t) {
    std::string s(rng() % 64, '\0');
    for (auto& ch : s) ch = char(rng() % 4 == 0 ? " \n\t"[rng() % 3] : rng() % 256);
    std::string joined;
    for (auto c : bpe_pretokenize(s)) {
      CHECK(!c.empty());
      joined += c;
    }
    CHECK(joined == s);
  }
}

TEST_CASE("BPE::train: the classic aaabdaaabac example, merge by merge") {
  // Pairs (with overlaps): aa 4, ab 2, others 1 -> aa = 256: Z a b d Z a b a c; then Za 2 and ab 2 tie, the
  // smaller pair (97, 98) wins -> ab = 257: Z Y d Z Y a c; then ZY 2 -> 258: X d X a c; no pair occurs twice.
  BPETrainStats st;
  BPE bpe = BPE::train("aaabdaaabac", {.vocab_size = 1000}, &st);
  using M = std::vector<std::pair<int32_t, int32_t>>;
  CHECK(bpe.merges() == M{{97, 97}, {97, 98}, {256, 257}});
  CHECK(bpe.vocab_size() == 259);
  CHECK(st.merges == 3);
  CHECK(st.stopped_early);
  CHECK(st.chunks == 1);
  CHECK(bpe.token_bytes(258) == "aaab");
  CHECK(bpe.encode("aaabdaaabac") == std::vector<int64_t>{258, 100, 258, 97, 99});
  CHECK(bpe.encode("aaab aaa") == std::vector<int64_t>{258, ' ', 256, 97});  // " aaa" is one chunk: ' ' a a a
  CHECK(bpe.decode({258, 100, 258, 97, 99}) == "aaabdaaabac");
  // min_frequency 1 goes on merging pairs seen once; vocab_size caps the count.
  BPE more = BPE::train("aaabdaaabac", {.vocab_size = 261, .min_frequency = 1});
  CHECK(more.vocab_size() == 261);
  CHECK(more.merges()[3] == std::pair<int32_t, int32_t>{97, 99});  // count 1 ties: (97, 99) < (100, 258) < (258, 97) ...
  CHECK(more.merges()[4] == std::pair<int32_t, int32_t>{100, 258});  // X d X 259: (100, 258) < (258, 100) < (258, 259)
  CHECK(more.encode("aaabdaaabac") == std::vector<int64_t>{258, 260, 259});
  // Merges never cross chunks: "ab ab" has the pair (b, ' ') in bytes, but ' ' starts the next chunk.
  BPE words = BPE::train("ab ab ab ab", {.vocab_size = 300});
  CHECK(words.merges() == M{{97, 98}, {32, 256}});
  CHECK(words.encode("ab ab") == std::vector<int64_t>{256, 257});
  check_error([] { BPE::train("x", {.vocab_size = 255}); }, {"vocab_size", "255"});
  check_error([] { BPE::train("x", {.vocab_size = 300, .min_frequency = 0}); }, {"min_frequency"});
}

TEST_CASE("BPE::train = the definition (naive recount every step), repeated letters and ties included") {
  std::mt19937 rng(13);
  for (int t = 0; t < 6; ++t) {
    std::string corpus;
    if (t % 2 == 0) {
      corpus = english_corpus(4000, uint32_t(t));
    } else {  // few letters: long runs (aaaa: overlapping pairs), back-to-back pairs (abab), many ties
      for (int i = 0; i < 3000; ++i) corpus += rng() % 7 == 0 ? ' ' : "aab"[rng() % (t == 1 ? 1 : 3)];
    }
    INFO(t);
    CHECK(BPE::train(corpus, {.vocab_size = 400}).merges() == naive_train(corpus, 400));
    CHECK(BPE::train(corpus, {.vocab_size = 300, .min_frequency = 1}).merges() == naive_train(corpus, 300, 1));
  }
}

TEST_CASE("BPE::train: the vocabulary size is reached, deterministically, and encode agrees with the reference") {
  std::string corpus = english_corpus(200000);
  BPETrainStats st;
  BPE bpe = BPE::train(corpus, {.vocab_size = 600}, &st);
  CHECK(bpe.vocab_size() == 600);
  CHECK(st.merges == 344);
  CHECK(!st.stopped_early);
  CHECK(st.bytes == int64_t(corpus.size()));
  CHECK(st.unique_chunks > 5000);
  CHECK(st.unique_chunks < st.chunks / 2);
  // Frequent words became single tokens: " the" and " thinking".
  CHECK(bpe.encode(" the").size() == 1);
  CHECK(bpe.encode(" thinking").size() == 1);
  // No token crosses a word boundary (a non-space byte followed by a space).
  for (int64_t id = 256; id < bpe.vocab_size(); ++id) {
    const std::string& t = bpe.token_bytes(id);
    for (size_t i = 0; i + 1 < t.size(); ++i) CHECK_FALSE((t[i] != ' ' && t[i + 1] == ' '));
  }
  // Deterministic: the same corpus gives the same merges, the same file and the same ids.
  BPE again = BPE::train(corpus, {.vocab_size = 600});
  CHECK(again.merges() == bpe.merges());
  CHECK(again.to_json() == bpe.to_json());
  std::vector<int64_t> ids = bpe.encode(corpus);
  CHECK(bpe.encode(corpus) == ids);
  CHECK(ids.size() * 3 < corpus.size());  // compresses: > 3 bytes per token on this vocabulary
  // The fast encoder (short-chunk loop, heap for chunks > 24 bytes, per-call cache) = the definition.
  std::string sample = corpus.substr(0, 20000);
  CHECK(bpe.encode(sample) == naive_encode(bpe, sample));
  std::mt19937 rng(3);
  for (int t = 0; t < 50; ++t) {  // long chunks: runs of letters without spaces
    std::string s;
    size_t n = 20 + rng() % 200;
    while (s.size() < n) s += "thequickbrownfoxthethinkingthosethere"[rng() % 37];
    INFO(s);
    CHECK(bpe.encode(s) == naive_encode(bpe, s));
    CHECK(bpe.decode(bpe.encode(s)) == s);
  }
}

TEST_CASE("BPE: exact byte round trip for any bytes (all 256 values, invalid UTF-8, NUL) and for Chinese") {
  std::string corpus = english_corpus(50000);
  for (int i = 0; i < 30; ++i) corpus += kChinese;
  BPE bpe = BPE::train(corpus, {.vocab_size = 512});
  std::mt19937 rng(11);
  std::string random(100000, '\0');
  for (auto& c : random) c = char(rng() % 256);
  for (int v = 0; v < 256; ++v) random[size_t(v)] = char(v);  // every byte value, NUL included
  std::vector<int64_t> ids = bpe.encode(random);
  CHECK(bpe.decode(ids) == random);
  CHECK(ids == naive_encode(bpe, random));
  for (std::string s : {std::string("\xff\xfe\xfd"), std::string("\xc0\xaf"), std::string("\xe4\xb8"),
                        std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"), std::string("a\0b\0\0 c", 7),
                        std::string("\x80 \x80 the \xe4\xb8\xad"), std::string()}) {
    CHECK(bpe.decode(bpe.encode(s)) == s);
  }
  // Chinese: through the mixed vocabulary, and through one trained on the poems alone, where every phrase
  // between punctuation becomes one token: 16 phrases, 16 punctuation marks, 4 line breaks.
  std::vector<int64_t> zh = bpe.encode(kChinese);
  CHECK(bpe.decode(zh) == kChinese);
  CHECK(zh.size() < kChinese.size());
  CHECK(zh == naive_encode(bpe, kChinese));
  std::string poems;
  for (int i = 0; i < 30; ++i) poems += kChinese;
  BPETrainStats zst;
  BPE zbpe0 = BPE::train(poems, {.vocab_size = 1000}, &zst);
  CHECK(zst.stopped_early);
  std::vector<int64_t> zh1 = zbpe0.encode(kChinese);
  CHECK(zh1.size() == 36);
  CHECK(zbpe0.token_bytes(zh1[0]) == "床前明月光");
  CHECK(zbpe0.decode(zh1) == kChinese);
  // The fortunes-zh corpus when installed.
  if (fs::exists("/usr/share/games/fortunes/tang300")) {
    std::string tang = fortunes_corpus("/usr/share/games/fortunes/tang300");
    BPE zbpe = BPE::train(tang, {.vocab_size = 1000});
    std::vector<int64_t> t = zbpe.encode(tang);
    CHECK(zbpe.decode(t) == tang);
    CHECK(zbpe.vocab_size() == 1000);
    CHECK(t.size() < tang.size() / 2);
  }
  check_error([&] { bpe.decode({512}); }, {"512", "out of range", "512"});
  check_error([&] { bpe.decode({-1}); }, {"-1"});
}

TEST_CASE("BPE JSON: save/load round trip, atomic file, the exact format") {
  TempDir dir;
  BPE bpe = BPE::train("aaabdaaabac", {.vocab_size = 1000});
  CHECK(bpe.to_json() == "{\"format\": \"liandan-bpe-1\", \"vocab_size\": 259, \"merges\": [\n  [97, 97],\n  [97, 98],\n  [256, 257]\n]}\n");
  CHECK(BPE().to_json() == "{\"format\": \"liandan-bpe-1\", \"vocab_size\": 256, \"merges\": []}\n");
  std::string corpus = english_corpus(30000) + kChinese;
  BPE big = BPE::train(corpus, {.vocab_size = 400});
  big.save(dir / "bpe.json");
  BPE back = BPE::load(dir / "bpe.json");
  CHECK(back.merges() == big.merges());
  CHECK(back.vocab_size() == 400);
  CHECK(back.encode(corpus) == big.encode(corpus));
  CHECK(back.to_json() == read_bytes(dir / "bpe.json"));
  for (auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().filename() == "bpe.json");  // no temporaries left
  // Other JSON spellings of the same content load too.
  CHECK(BPE::from_json(R"({"merges":[[97,97]],"vocab_size":257,"format":"liandan-bpe-1"})").merges().size() == 1);
  // The Tokenizer wrapper the tasks use.
  Tokenizer tok = Tokenizer::bpe(std::make_shared<const BPE>(back));
  CHECK(tok.mode() == TextMode::bpe);
  CHECK(tok.vocab_size() == 400);
  CHECK(tok.contains(U'\U0001F600'));
  Tensor t = tok.encode_tensor(kChinese);
  CHECK(t.numel() == int64_t(big.encode(kChinese).size()));
  CHECK(tok.decode(t) == kChinese);
  check_error([&] { tok.decode(std::vector<int64_t>{400}); }, {"400"});
}

TEST_CASE("BPE JSON: damaged files are errors naming the file and the fault, never a crash") {
  TempDir dir;
  auto bad = [&](const std::string& text, std::initializer_list<std::string> parts) {
    std::string p = dir / "bad.json";
    write_bytes(p, text);
    INFO(text.substr(0, 200));
    check_error([&] { BPE::load(p); }, parts);
  };
  const std::string F = R"("format": "liandan-bpe-1")";
  bad("", {"bad.json", "invalid JSON"});
  bad("{", {"invalid JSON"});
  bad(std::string("\0\0\0", 3), {"invalid JSON"});
  bad("[1, 2]", {"must be a JSON object", "array"});
  bad("\"liandan-bpe-1\"", {"must be a JSON object"});
  bad(R"({"vocab_size": 256, "merges": []})", {"'format' is missing"});
  bad(R"({"format": 1, "vocab_size": 256, "merges": []})", {"'format'", "not a string"});
  bad(R"({"format": "liandan-bpe-2", "vocab_size": 256, "merges": []})", {"liandan-bpe-2", "is not liandan-bpe-1"});
  bad("{" + F + R"(, "merges": []})", {"'vocab_size' is missing"});
  bad("{" + F + R"(, "vocab_size": "256", "merges": []})", {"'vocab_size' must be an integer", "\"256\""});
  bad("{" + F + R"(, "vocab_size": 256.5, "merges": []})", {"'vocab_size' must be an integer", "256.5"});
  bad("{" + F + R"(, "vocab_size": true, "merges": []})", {"'vocab_size' must be an integer"});
  bad("{" + F + R"(, "vocab_size": 255, "merges": []})", {"'vocab_size' must be in [256, 4194304]", "255"});
  bad("{" + F + R"(, "vocab_size": -1, "merges": []})", {"must be in [256"});
  bad("{" + F + R"(, "vocab_size": 18446744073709551615, "merges": []})", {"must be in [256", "18446744073709551615"});
  bad("{" + F + R"(, "vocab_size": 1099511627776, "merges": []})", {"must be in [256", "1099511627776"});
  bad("{" + F + R"(, "vocab_size": 1e30, "merges": []})", {"must be an integer"});
  bad("{" + F + R"(, "vocab_size": 256})", {"'merges' is missing"});
  bad("{" + F + R"(, "vocab_size": 256, "merges": {}})", {"'merges' is missing or not an array"});
  bad("{" + F + R"(, "vocab_size": 258, "merges": [[97, 97]]})", {"vocab_size 258 needs 2 merges, the file has 1"});
  bad("{" + F + R"(, "vocab_size": 256, "merges": [[97, 97]]})", {"needs 0 merges"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[97]]})", {"merge 0 must be a pair", "[97]"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[97, 98, 99]]})", {"merge 0 must be a pair"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [97]})", {"merge 0 must be a pair"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [["a", 98]]})", {"merge 0", "\"a\"", "[0, 255]"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[97.0, 98]]})", {"merge 0", "not an id"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[256, 98]]})", {"merge 0 [256, 98]", "256 is not an id defined before it", "[0, 255]"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[-1, 98]]})", {"-1 is not an id"});
  bad("{" + F + R"(, "vocab_size": 258, "merges": [[97, 98], [97, 258]]})", {"merge 1", "258", "[0, 256]"});
  bad("{" + F + R"(, "vocab_size": 258, "merges": [[97, 98], [97, 18446744073709551615]]})", {"merge 1", "18446744073709551615"});
  bad("{" + F + R"(, "vocab_size": 258, "merges": [[97, 98], [97, 98]]})", {"merge 1 [97, 98] repeats merge 0"});
  bad("{" + F + R"(, "vocab_size": 256, "merges": [], "extra": 1})", {"unknown key 'extra'"});
  bad(std::string(100000, '['), {"invalid JSON"});
  // Deeply nested values that parse: refused by kind and size, without recursing into them.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  bad("{" + F + R"(, "vocab_size": )" + deep + R"(, "merges": []})", {"'vocab_size' must be an integer, got [an array of 1]"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [)" + deep + "]}", {"merge 0 must be a pair [a, b], got [an array of 1]"});
  bad("{" + F + R"(, "vocab_size": 257, "merges": [[)" + deep + ", 1]]}", {"merge 0 [an array of 1, 1]: [an array of 1] is not an id"});
  check_error([&] { BPE::load(dir / "missing.json"); }, {"missing.json"});
  check_error([&] { BPE::load(dir.path.string()); }, {"not a regular file"});
  check_error([] { BPE::from_merges({{97, 300}}); }, {"merge 0", "300"});

  // Every truncation, and random byte damage, of a real file: each one loads as the same tokenizer (only the
  // trailing newline cut) or is a liandan::Error — nothing else escapes.
  BPE good = BPE::train(english_corpus(20000), {.vocab_size = 300});
  const std::string text = good.to_json();
  std::string p = dir / "damaged.json";
  int errors = 0, loaded = 0;
  auto attempt = [&](const std::string& s) {
    write_bytes(p, s);
    try {
      BPE b = BPE::load(p);
      ++loaded;
      CHECK(b.vocab_size() >= 256);
      CHECK(b.vocab_size() == 256 + int64_t(b.merges().size()));
    } catch (const Error& e) {
      ++errors;
      CHECK(std::string(e.what()).find("damaged.json") != std::string::npos);
    } catch (const std::exception& e) {
      FAIL("not a liandan::Error: " << e.what());
    }
  };
  for (size_t n = 0; n < text.size(); ++n) attempt(text.substr(0, n));
  CHECK(loaded == 1);  // only the cut "\n"
  std::mt19937 rng(5);
  const char junk[] = "0123456789-[]{},:\".e \0x\xff";
  for (int t = 0; t < 1500; ++t) {
    std::string s = text;
    int edits = 1 + int(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = junk[rng() % (sizeof junk - 1)]; break;
        case 1: s.insert(at, 1, junk[rng() % (sizeof junk - 1)]); break;
        default: s.erase(at, 1);
      }
    }
    attempt(s);
  }
  CHECK(errors > 1000);
}

TEST_CASE("liandan tokenizer train + liandan train lm and text_cls with data.tokenizer = a BPE file") {
  std::string bin = liandan::testing::liandan_bin();
  if (bin.empty()) {
    MESSAGE("LIANDAN_BIN is not set (CTest sets it): the end-to-end runs are skipped");
    return;
  }
  TempDir dir;
  // A folder of text files as the corpus.
  fs::create_directories(dir / "corpus");
  write_bytes(dir / "corpus/a.txt", english_corpus(20000, 1));
  write_bytes(dir / "corpus/b.txt", english_corpus(20000, 2) + kChinese);
  auto r = liandan::testing::run_process(bin, {"tokenizer", "train", dir / "corpus", "--vocab", "400", "--out",
                                               dir / "bpe.json"}, 60);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("learned 144 merges (vocab 400)") != std::string::npos);
  CHECK(r.output.find("MB/s") != std::string::npos);
  BPE bpe = BPE::load(dir / "bpe.json");
  CHECK(bpe.vocab_size() == 400);
  CHECK(bpe.merges() == BPE::train(read_text(dir / "corpus"), {.vocab_size = 400}).merges());

  auto enc = liandan::testing::run_process(bin, {"tokenizer", "encode", dir / "bpe.json", "the dog"}, 30);
  CHECK(enc.exit_code == 0);
  std::string ids;
  for (int64_t id : bpe.encode("the dog")) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  CHECK(enc.output.rfind(ids + "\n", 0) == 0);

  // lm: 3 steps on the corpus through the BPE; the describe line shows its vocabulary, the sample decodes.
  write_bytes(dir / "lm.toml", "task = \"lm\"\nsteps = 3\nbatch_size = 4\nlog_every = 1\neval_every = 3\n"
                               "checkpoint_every = 3\n[data]\ncorpus = \"" + dir / "corpus" + "\"\ntokenizer = \"" +
                               dir / "bpe.json" + "\"\nseq_len = 16\n[model]\nd_model = 16\nn_layers = 1\n"
                               "[eval]\ntokens = 64\n[sample]\nlength = 20\nprompt = \"the quick\"\n");
  auto lm = liandan::testing::run_process(bin, {"train", dir / "lm.toml", "--run-dir", dir / "run-lm"}, 120);
  INFO(lm.output);
  REQUIRE(lm.exit_code == 0);
  CHECK(lm.output.find("vocab 400") != std::string::npos);
  std::string cfg = read_bytes(fs::path(dir / "run-lm") / "config.toml");
  CHECK(cfg.find("tokenizer = '" + dir / "bpe.json" + "'") + cfg.find("tokenizer = \"" + dir / "bpe.json" + "\"") !=
        2 * std::string::npos);
  bool found_sample = false;
  for (auto& e : fs::recursive_directory_iterator(fs::path(dir / "run-lm") / "samples")) {
    if (e.path().extension() != ".txt") continue;
    std::string s = read_bytes(e.path());
    CHECK(s.rfind("the quick", 0) == 0);  // the prompt, decoded back through the BPE
    found_sample = true;
  }
  CHECK(found_sample);

  // The checkpoint remembers its BPE (a fingerprint of the merges in the task state): the file replaced by another
  // BPE of the same vocab size is refused on resume, naming data.tokenizer; the original file resumes.
  std::string original = read_bytes(dir / "bpe.json");
  BPE::train(english_corpus(20000, 7) + kChinese + kChinese, {.vocab_size = 400}).save(dir / "bpe.json");
  REQUIRE(BPE::load(dir / "bpe.json").vocab_size() == 400);
  REQUIRE(BPE::load(dir / "bpe.json").fingerprint() != bpe.fingerprint());
  auto swapped = liandan::testing::run_process(bin, {"resume", dir / "run-lm", "--set", "steps=4"}, 120);
  INFO(swapped.output);
  CHECK(swapped.exit_code != 0);
  CHECK(swapped.output.find("data.tokenizer BPE file is not the one this checkpoint was trained with") != std::string::npos);
  write_bytes(dir / "bpe.json", original);
  auto resumed = liandan::testing::run_process(bin, {"resume", dir / "run-lm", "--set", "steps=4"}, 120);
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);

  // Bad values of the key are errors naming it.
  auto bad_run = [&](std::vector<std::string> sets, std::initializer_list<std::string> parts) {
    std::vector<std::string> args{"train", dir / "lm.toml", "--run-dir", dir / "run-bad", "--overwrite"};
    for (auto& s : sets) args.push_back("--set"), args.push_back(s);
    auto b = liandan::testing::run_process(bin, args, 60);
    INFO(b.output);
    CHECK(b.exit_code == 1);
    for (auto& p : parts) CHECK(b.output.find(p) != std::string::npos);
  };
  bad_run({"data.tokenizer=" + dir / "missing.json"}, {"'data.tokenizer'", "missing.json"});
  write_bytes(dir / "broken.json", "{\"format\": \"liandan-bpe-1\", \"vocab_size\": 300, \"merges\": []}");
  bad_run({"data.tokenizer=" + dir / "broken.json"}, {"'data.tokenizer'", "broken.json", "needs 44 merges"});
  bad_run({"data.mode=chars"}, {"'data.tokenizer'", "data.mode"});
  bad_run({"data.tokenizer=7"}, {"data.tokenizer"});

  // text_cls: labelled lines through the same BPE.
  std::string train_tsv, test_tsv;
  std::mt19937 rng(9);
  for (int i = 0; i < 64; ++i) {
    bool zh = i % 2;
    std::string line = zh ? kChinese.substr(size_t(rng() % 10) * 3, 30) : english_corpus(30, uint32_t(i)).substr(0, 30);
    for (auto& c : line)
      if (c == '\n' || c == '\t') c = ' ';
    (i < 48 ? train_tsv : test_tsv) += std::string(zh ? "zh" : "en") + "\t" + line + "\n";
  }
  write_bytes(dir / "train.tsv", train_tsv);
  write_bytes(dir / "test.tsv", test_tsv);
  write_bytes(dir / "cls.toml", "task = \"text_cls\"\nsteps = 2\nbatch_size = 8\n[data]\ntrain = \"" + dir / "train.tsv" +
                                    "\"\ntest = \"" + dir / "test.tsv" + "\"\ntokenizer = \"" + dir / "bpe.json" +
                                    "\"\n[model]\nd_model = 16\nn_layers = 1\n");
  auto cls = liandan::testing::run_process(bin, {"train", dir / "cls.toml", "--run-dir", dir / "run-cls"}, 120);
  INFO(cls.output);
  CHECK(cls.exit_code == 0);
}
