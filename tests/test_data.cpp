// Data sets, loaders and images (core/data/): IDX files, text tokenizers, composite digits, the DataLoader,
// toy 2-D distributions, PNG and plots. Nothing here needs downloaded data: files are written to a temp dir.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "tests/test_files.h"
#include "core/data/composite.h"
#include "core/data/image.h"
#include "core/data/loader.h"
#include "core/data/mnist.h"
#include "core/data/text.h"
#include "core/data/toy2d.h"
#include "core/ops.h"

using namespace liandan;
using namespace liandan::data;
namespace fs = std::filesystem;

namespace {

using liandan::testing::check_error;
using liandan::testing::read_bytes;
using liandan::testing::TempDir;
using liandan::testing::write_bytes;




std::vector<int64_t> i64s(const Tensor& t) {
  Tensor c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

// ============================================================================ MNIST / IDX

TEST_CASE("IDX files round trip and load_mnist reads a small MNIST") {
  TempDir dir;
  const int64_t n = 5;
  std::vector<uint8_t> pixels(size_t(n * 28 * 28)), labels = {3, 0, 9, 1, 7};
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t((i * 37 + 11) % 256);
  write_idx_u8(dir / "train-images-idx3-ubyte", {n, 28, 28}, pixels);
  write_idx_u8(dir / "train-labels-idx1-ubyte", {n}, labels);

  IdxU8 raw = read_idx_u8(dir / "train-images-idx3-ubyte");
  CHECK(raw.dims == Shape{n, 28, 28});
  CHECK(raw.data == pixels);
  // the header is the standard one: magic 0x00000803, then big-endian sizes
  std::string bytes = read_bytes(dir / "train-images-idx3-ubyte");
  CHECK(bytes.substr(0, 8) == std::string("\0\0\x08\x03\0\0\0\x05", 8));
  CHECK(bytes.size() == 16 + pixels.size());

  Mnist m = load_mnist(dir.path.string(), true);
  CHECK(m.images.shape() == Shape{n, 28, 28});
  CHECK(m.images.dtype() == DType::f32);
  CHECK(m.labels.dtype() == DType::i64);
  CHECK(i64s(m.labels) == std::vector<int64_t>{3, 0, 9, 1, 7});
  CHECK(m.images.at({2, 4, 7}) == doctest::Approx(pixels[2 * 784 + 4 * 28 + 7] / 255.0).epsilon(1e-7));
  CHECK(max(m.images).item() <= 1.0);
  CHECK(min(m.images).item() >= 0.0);
  Batch b = mnist_dataset(m)->get({2, 0});
  CHECK(b["image"].shape() == Shape{2, 1, 28, 28});
  CHECK(b["image"].at({0, 0, 4, 7}) == m.images.at({2, 4, 7}));
  CHECK(i64s(b["label"]) == std::vector<int64_t>{9, 3});
}

TEST_CASE("corrupt, truncated and inconsistent IDX files are errors naming the file") {
  TempDir dir;
  std::vector<uint8_t> pixels(2 * 28 * 28, 7);
  std::string good = dir / "good";
  write_idx_u8(good, {2, 28, 28}, pixels);
  std::string bytes = read_bytes(good);

  std::string truncated = dir / "truncated-idx3";
  write_bytes(truncated, bytes.substr(0, bytes.size() - 1));
  check_error([&] { read_idx_u8(truncated); }, {truncated, "truncated", "[2, 28, 28]", "1567"});
  std::string header_only = dir / "short-header";
  write_bytes(header_only, bytes.substr(0, 9));
  check_error([&] { read_idx_u8(header_only); }, {header_only, "truncated header"});
  std::string trailing = dir / "trailing";
  write_bytes(trailing, bytes + "xx");
  check_error([&] { read_idx_u8(trailing); }, {trailing, "2 trailing bytes"});
  std::string magic = dir / "magic";
  write_bytes(magic, "\x01" + bytes.substr(1));
  check_error([&] { read_idx_u8(magic); }, {magic, "magic"});
  std::string type = dir / "type";
  write_bytes(type, bytes.substr(0, 2) + "\x0d" + bytes.substr(3));
  check_error([&] { read_idx_u8(type); }, {type, "not u8"});
  std::string gz = dir / "gz";
  write_bytes(gz, std::string("\x1f\x8b\x08\x00" "rest", 8));
  check_error([&] { read_idx_u8(gz); }, {gz, "gzip"});
  check_error([&] { read_idx_u8(dir / "absent"); }, {dir / "absent", "cannot open"});
  check_error([&] { read_idx_labels(good); }, {good, "expected 1 dim"});

  // load_mnist: missing files, mismatched counts, labels that are not digits, wrong image size
  check_error([&] { load_mnist(dir.path.string(), false); }, {"t10k-images-idx3-ubyte", "scripts/get-data"});
  write_idx_u8(dir / "train-images-idx3-ubyte", {2, 28, 28}, pixels);
  write_idx_u8(dir / "train-labels-idx1-ubyte", {3}, {1, 2, 3});
  check_error([&] { load_mnist(dir.path.string(), true); }, {"has 2 images", "3 labels"});
  write_idx_u8(dir / "train-labels-idx1-ubyte", {2}, {1, 10});
  check_error([&] { load_mnist(dir.path.string(), true); }, {"train-labels-idx1-ubyte", "label 1 is 10"});
  write_idx_u8(dir / "train-images-idx3-ubyte", {2, 14, 56}, pixels);
  write_idx_u8(dir / "train-labels-idx1-ubyte", {2}, {1, 2});
  check_error([&] { load_mnist(dir.path.string(), true); }, {"train-images-idx3-ubyte", "28x28"});
}

// ============================================================================ text

TEST_CASE("UTF-8 decoding: valid text, and U+FFFD for every byte of an invalid sequence") {
  std::string s = "a\xc3\xa9\xe7\x82\xbc\xf0\x9f\x98\x80";  // a é 炼 😀
  CHECK(utf8_decode(s) == std::u32string{U'a', 0xE9, 0x70BC, 0x1F600});
  CHECK(utf8_encode(utf8_decode(s)) == s);
  CHECK(utf8_decode("\xff") == std::u32string{0xFFFD});
  CHECK(utf8_decode("\xe7\x82") == std::u32string{0xFFFD, 0xFFFD});          // truncated
  CHECK(utf8_decode("\xc0\xaf") == std::u32string{0xFFFD, 0xFFFD});          // overlong '/'
  CHECK(utf8_decode("\xed\xa0\x80") == std::u32string{0xFFFD, 0xFFFD, 0xFFFD});  // surrogate
  CHECK(utf8_decode("\xf4\x90\x80\x80x").size() == 5);                          // past U+10FFFF
}

TEST_CASE("tokenizers: bytes and characters round trip, including Chinese") {
  std::string text = "Hello, 炼丹! 学而时习之，不亦说乎？ héllo\n";
  Tokenizer b = Tokenizer::bytes();
  CHECK(b.vocab_size() == 256);
  std::vector<int64_t> bids = b.encode(text);
  CHECK(bids.size() == text.size());
  CHECK(b.decode(bids) == text);
  std::string binary("\x00\xff\x80 x", 5);  // bytes mode takes anything, even invalid UTF-8
  CHECK(b.decode(b.encode(binary)) == binary);

  Tokenizer c = Tokenizer::chars(text);
  std::u32string cps = utf8_decode(text);
  CHECK(c.vocab_size() == int64_t(std::set<char32_t>(cps.begin(), cps.end()).size()));
  std::vector<int64_t> ids = c.encode(text);
  CHECK(ids.size() == cps.size());  // one token per character
  CHECK(c.decode(ids) == text);
  // ids follow code point order: '\n' (U+000A) is id 0 and '？' (U+FF1F) the last
  CHECK(c.encode("\n")[0] == 0);
  CHECK(c.encode("？")[0] == c.vocab_size() - 1);
  CHECK(c.encode("炼丹") == std::vector<int64_t>{c.encode("炼")[0], c.encode("丹")[0]});
  // the vocabulary string rebuilds the same tokenizer
  Tokenizer c2 = Tokenizer::from_vocab(c.vocab());
  CHECK(c2.encode(text) == ids);
  CHECK(c.decode(c.encode_tensor(text).view({1, -1})) == text);

  check_error([&] { c.encode("Hello 龙"); }, {"'龙'", "U+9f99", "at byte 6"});
  check_error([&] { c.decode(std::vector<int64_t>{c.vocab_size()}); }, {"out of range"});
  check_error([&] { Tokenizer::from_vocab("aba"); }, {"twice"});
}

TEST_CASE("read_text and the fortunes reader") {
  TempDir dir;
  fs::create_directories(dir.path / "sub");
  write_bytes(dir / "b.txt", "second");
  write_bytes(dir / "a.txt", "first\n");
  write_bytes(dir / "sub/c.txt", "third\n");
  CHECK(read_text(dir.path.string()) == "first\nsecond\nthird\n");  // sorted paths, newline-terminated
  CHECK(read_text(dir / "b.txt") == "second\n");
  check_error([&] { read_text(dir / "missing"); }, {"missing", "not found"});

  TempDir f;
  write_bytes(f / "quotes",
              "First fortune,\n  indented line.\n%\n\x1b[33m    -- colour\x1b[m\n%\n%\n_\bb_\bo_\bl_\bd text\n"
              "\xe5\xad\xa6\xe8\x80\x8c\xe6\x97\xb6\xe4\xb9\xa0\xe4\xb9\x8b  \n%\n");
  write_bytes(f / "quotes.dat", std::string("\x00\x00\x00\x02" "binary", 10));  // the strfile index is skipped
  std::vector<std::string> e = read_fortunes(f.path.string());
  REQUIRE(e.size() == 3);
  CHECK(e[0] == "First fortune,\n  indented line.");
  CHECK(e[1] == "    -- colour");           // ANSI colour codes removed
  CHECK(e[2] == "bold text\n学而时习之");  // overstrikes resolved, trailing spaces trimmed
  CHECK(fortunes_corpus(f.path.string()) == "First fortune,\n  indented line.\n\n    -- colour\n\nbold text\n学而时习之\n");
}

TEST_CASE("token splits, random windows and TextWindows") {
  Tensor tokens = arange(100, DType::i64);
  TokenSplit sp = split_tokens(tokens, 0.1);
  CHECK(i64s(sp.train).size() == 90);
  CHECK(i64s(sp.val) == i64s(arange(90.0, 100.0, 1.0, DType::i64)));
  CHECK(sp.train.at({89}) == 89);

  Generator g(3);
  Tensor w = random_windows(sp.train, 64, 8, g);
  CHECK(w.shape() == Shape{64, 9});
  std::set<int64_t> starts;
  for (int64_t b = 0; b < 64; ++b) {
    int64_t s = int64_t(w.at({b, 0}));
    starts.insert(s);
    CHECK(s >= 0);
    CHECK(s + 8 <= 89);  // the window stays in the train split
    for (int64_t j = 0; j <= 8; ++j) CHECK(w.at({b, j}) == s + j);
  }
  CHECK(starts.size() > 30);  // starts are spread out
  Generator g2(3);
  CHECK(random_windows(sp.train, 64, 8, g2).to_vector() == w.to_vector());

  TextWindows tw(tokens, 10, 10);  // tiles the text with one token of overlap
  CHECK(tw.size() == 9);
  Tensor b = tw.get({0, 8})["tokens"];
  CHECK(b.shape() == Shape{2, 11});
  CHECK(b.at({0, 10}) == 10);
  CHECK(b.at({1, 0}) == 80);
  CHECK(b.at({1, 10}) == 90);
}

// ============================================================================ composite digits

namespace {
// Ten synthetic 28x28 "digits": class c is a filled rectangle of intensity 0.5 + 0.05c, of width 4 + 2c,
// and height 20, with a one-pixel-wide stroke of intensity 1 down its middle column.
std::pair<Tensor, Tensor> synthetic_digits(int64_t per_class) {
  int64_t n = 10 * per_class;
  Tensor images = zeros({n, 28, 28}), labels = empty({n}, DType::i64);
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = i % 10, w = 4 + 2 * c, x0 = (28 - w) / 2 + (i / 10) % 3 - 1;  // instances shift a little
    labels.set({i}, double(c));
    for (int64_t y = 4; y < 24; ++y)
      for (int64_t x = x0; x < x0 + w; ++x) images.set({i, y, x}, x == x0 + w / 2 ? 1.0 : 0.5 + 0.05 * double(c));
  }
  return {images, labels};
}
}  // namespace

TEST_CASE("composite digits: image, visible fractions and the three targets agree with the placed digits") {
  auto [images, labels] = synthetic_digits(3);
  CompositeOptions opt;
  opt.height = 40, opt.width = 84, opt.min_digits = 3, opt.max_digits = 3, opt.min_gap = 10, opt.size = 60, opt.seed = 5;
  CompositeDigits ds(images, labels, opt);
  int64_t partly_covered = 0;
  for (int64_t idx = 0; idx < ds.size(); ++idx) {
    CompositeSample s = ds.sample(idx);
    int64_t k = int64_t(s.classes.size());
    REQUIRE(k == 3);
    // the canvas is "over" compositing: c = 1 - Π(1 - v_i), recomputed here from the placements
    std::vector<double> ink(3, 0.0);
    double canvas_mass = 0, visible_mass = 0, max_err = 0;
    for (int64_t y = 0; y < 40; ++y)
      for (int64_t x = 0; x < 84; ++x) {
        double transmit = 1;
        for (int64_t i = 0; i < k; ++i) {
          int64_t r = y - s.y[size_t(i)], c = x - s.x[size_t(i)];
          if (r < 0 || r >= 28 || c < 0 || c >= 28) continue;
          double v = images.at({s.source_index[size_t(i)], r, c});
          transmit *= 1 - v;
          ink[size_t(i)] += v;
        }
        canvas_mass += 1 - transmit;
        max_err = std::max(max_err, std::fabs(s.image.at({0, y, x}) - (1 - transmit)));
      }
    CHECK(max_err < 1e-6);
    // visible ink of all digits adds up to the canvas
    for (int64_t i = 0; i < k; ++i) visible_mass += s.visible_fraction[size_t(i)] * ink[size_t(i)];
    CHECK(visible_mass == doctest::Approx(canvas_mass).epsilon(1e-9));
    // the digit placed last is on top: fully visible; every fraction is in [0, 1]
    CHECK(s.visible_fraction[2] == doctest::Approx(1.0));
    for (double f : s.visible_fraction) CHECK((f >= 0 && f <= 1 + 1e-12));
    // source rows are of the drawn class
    for (int64_t i = 0; i < k; ++i) CHECK(labels.at({s.source_index[size_t(i)]}) == s.classes[size_t(i)]);
    // targets
    for (int64_t c = 0; c < 10; ++c) {
      double present = 0, best = 0;
      for (int64_t i = 0; i < k; ++i)
        if (s.classes[size_t(i)] == c) present = 1, best = std::max(best, s.visible_fraction[size_t(i)]);
      CHECK(s.multi_hot[size_t(c)] == present);
      CHECK(s.soft[size_t(c)] == best);
    }
    // left to right, at least min_gap apart, inside the canvas
    std::vector<std::pair<int64_t, int64_t>> by_x;
    for (int64_t i = 0; i < k; ++i) by_x.emplace_back(s.x[size_t(i)], s.classes[size_t(i)]);
    std::sort(by_x.begin(), by_x.end());
    for (int64_t i = 0; i < k; ++i) {
      CHECK(s.sequence[size_t(i)] == by_x[size_t(i)].second);
      if (i > 0) CHECK(by_x[size_t(i)].first - by_x[size_t(i - 1)].first >= 10);
      CHECK((s.x[size_t(i)] >= 0 && s.x[size_t(i)] + 28 <= 84 && s.y[size_t(i)] >= 0 && s.y[size_t(i)] + 28 <= 40));
    }
    partly_covered += s.visible_fraction[0] < 1 - 1e-9;
  }
  CHECK(partly_covered > 0);  // some digits really are partly covered

  // the batch fields are the samples; an element does not depend on what else is in the batch
  Batch b = ds.get({7, 3});
  CompositeSample s7 = ds.sample(7);
  CHECK(b["image"].shape() == Shape{2, 1, 40, 84});
  CHECK(b["image"].select(0, 0).to_vector() == s7.image.to_vector());
  CHECK(b["sequence"].shape() == Shape{2, 3});
  CHECK(i64s(b["sequence"].select(0, 0)) == s7.sequence);
  CHECK(b["soft"].at({0, s7.classes[0]}) == doctest::Approx(s7.soft[size_t(s7.classes[0])]));
  CHECK(b["multi_hot"].select(0, 1).to_vector() == ds.get({3})["multi_hot"].select(0, 0).to_vector());
  CHECK(i64s(b["count"]) == std::vector<int64_t>{3, 3});
  CompositeDigits again(images, labels, opt);
  CHECK(again.sample(11).x == ds.sample(11).x);
  CHECK(again.sample(11).image.to_vector() == ds.sample(11).image.to_vector());
}

TEST_CASE("composite digits: variable count, class imbalance knob, and option errors") {
  auto [images, labels] = synthetic_digits(2);
  CompositeOptions opt;
  opt.min_digits = 1, opt.max_digits = 3, opt.size = 3000, opt.seed = 1;
  opt.class_probs = imbalanced_class_probs(9.0);
  CHECK(opt.class_probs[0] / opt.class_probs[9] == doctest::Approx(9.0));
  CompositeDigits ds(images, labels, opt);
  Batch b = ds.get({0, 1, 2});
  CHECK(!b.has("sequence"));  // only with a fixed digit count
  check_error([&] { (void)b["sequence"]; }, {"no field 'sequence'", "image, multi_hot"});
  std::vector<double> freq(10, 0.0), counts(4, 0.0);
  double digits = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    CompositeSample s = ds.sample(i);
    counts[s.classes.size()] += 1;
    for (int64_t c : s.classes) freq[size_t(c)] += 1, digits += 1;
  }
  for (int64_t k = 1; k <= 3; ++k) CHECK(counts[size_t(k)] / 3000 == doctest::Approx(1.0 / 3).epsilon(0.1));
  for (int64_t c = 0; c < 10; ++c) {
    double p = opt.class_probs[size_t(c)], se = std::sqrt(p * (1 - p) / digits);
    CHECK(std::fabs(freq[size_t(c)] / digits - p) < 5 * se);
  }
  opt.class_probs = {1, 1, 1};
  check_error([&] { (void)CompositeDigits(images, labels, opt); }, {"class_probs needs 10"});
  opt.class_probs = {};
  opt.width = 60, opt.min_gap = 20;
  check_error([&] { (void)CompositeDigits(images, labels, opt); }, {"cannot hold 3 digits"});
}

// ============================================================================ loader

namespace {
// Element i is the row {i, 2i}; get throws for `bad` (to test error propagation).
struct RowsDataset : Dataset {
  int64_t n, bad;
  RowsDataset(int64_t n, int64_t bad = -1) : n(n), bad(bad) {}
  int64_t size() const override { return n; }
  Batch get(const std::vector<int64_t>& idx) const override {
    Tensor t = empty({int64_t(idx.size()), 2}, DType::i64);
    for (size_t i = 0; i < idx.size(); ++i) {
      LD_CHECK(idx[i] != bad, "RowsDataset: element ", bad, " is broken");
      t.set({int64_t(i), 0}, double(idx[i]));
      t.set({int64_t(i), 1}, double(2 * idx[i]));
    }
    Batch b;
    b.add("row", t);
    return b;
  }
};

std::vector<std::vector<int64_t>> take(DataLoader& dl, int64_t n) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> r = i64s(dl.next()["row"]), first;
    for (size_t i = 0; i < r.size(); i += 2) {
      CHECK(r[i + 1] == 2 * r[i]);  // rows stay whole
      first.push_back(r[i]);
    }
    out.push_back(first);
  }
  return out;
}
}  // namespace

TEST_CASE("DataLoader: epochs are permutations, order is deterministic, prefetch on and off agree") {
  auto ds = std::make_shared<RowsDataset>(103);
  LoaderOptions opt;
  opt.batch_size = 10, opt.seed = 42;
  DataLoader a(ds, opt);
  CHECK(a.batches_per_epoch() == 10);  // drop_last: 3 elements left over
  auto first = take(a, 30);
  for (int64_t e = 0; e < 3; ++e) {
    std::set<int64_t> seen;
    for (int64_t p = 0; p < 10; ++p) seen.insert(first[size_t(e * 10 + p)].begin(), first[size_t(e * 10 + p)].end());
    CHECK(seen.size() == 100);  // no element twice within an epoch
    CHECK(*seen.rbegin() < 103);
  }
  CHECK(first[0] != first[10]);  // epochs are shuffled differently
  CHECK(first[3] == a.batch_indices(0, 3));

  opt.prefetch = false;
  DataLoader b(ds, opt);
  CHECK(take(b, 30) == first);
  opt.prefetch = true, opt.seed = 43;
  DataLoader c(ds, opt);
  CHECK(take(c, 1)[0] != first[0]);

  // no shuffling, no drop_last: index order, a short last batch
  LoaderOptions plain;
  plain.batch_size = 10, plain.shuffle = false, plain.drop_last = false;
  DataLoader d(ds, plain);
  CHECK(d.batches_per_epoch() == 11);
  auto seq = take(d, 12);
  CHECK(seq[0] == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(seq[10] == std::vector<int64_t>{100, 101, 102});
  CHECK(seq[11] == seq[0]);
}

TEST_CASE("DataLoader: state() / set_state() resume on exactly the next batch") {
  auto ds = std::make_shared<RowsDataset>(57);
  for (bool prefetch : {true, false}) {
    LoaderOptions opt;
    opt.batch_size = 8, opt.seed = 7, opt.prefetch = prefetch;
    DataLoader a(ds, opt);
    take(a, 13);  // into the third epoch (7 batches per epoch)
    std::vector<int64_t> st = a.state();
    CHECK(st == std::vector<int64_t>{7, 1, 6, 57, 8});
    auto expect = take(a, 15);

    LoaderOptions other = opt;
    other.seed = 999;  // the state carries the seed
    DataLoader b(ds, other);
    take(b, 3);
    b.set_state(st);
    CHECK(take(b, 15) == expect);
    a.set_state(st);  // rewinding a loader with batches in flight
    CHECK(take(a, 15) == expect);

    other.batch_size = 9;
    DataLoader wrong(ds, other);
    check_error([&] { wrong.set_state(st); }, {"57 elements in batches of 8", "in batches of 9"});
  }
}

TEST_CASE("DataLoader: a data set's exception is rethrown in its batch's turn; shutdown is clean") {
  auto ds = std::make_shared<RowsDataset>(40, 25);
  for (bool prefetch : {true, false}) {
    LoaderOptions opt;
    opt.batch_size = 5, opt.shuffle = false, opt.prefetch = prefetch;
    DataLoader dl(ds, opt);
    take(dl, 5);  // elements 0..24 are fine
    check_error([&] { dl.next(); }, {"element 25 is broken"});
    check_error([&] { dl.next(); }, {"element 25 is broken"});  // sticky
    dl.set_state({0, 0, 0, 40, 5});  // a restored state clears the failure
    CHECK(take(dl, 1)[0] == std::vector<int64_t>{0, 1, 2, 3, 4});
  }
  // destroying loaders whose worker is blocked on a full queue, or was never started
  for (int i = 0; i < 20; ++i) {
    DataLoader dl(std::make_shared<RowsDataset>(1000), LoaderOptions{});
    if (i % 2) dl.next();
  }
  // TensorDataset rows
  Tensor x = arange(0.0, 24.0, 1.0).view({6, 2, 2});
  TensorDataset td(Batch{{{"x", x}, {"y", arange(6, DType::i64)}}});
  Batch b = td.get({4, 1});
  CHECK(b["x"].to_vector() == std::vector<double>{16, 17, 18, 19, 4, 5, 6, 7});
  CHECK(i64s(b["y"]) == std::vector<int64_t>{4, 1});
  check_error([&] { (void)TensorDataset(Batch{{{"x", x}, {"y", arange(5, DType::i64)}}}); }, {"field 'y'", "[5]"});
}

// ============================================================================ toy 2-D

namespace {
struct Moments {
  double mx = 0, my = 0, vx = 0, vy = 0, cxy = 0, n = 0;
};
Moments moments(const Tensor& p) {
  Moments m;
  m.n = double(p.size(0));
  const float* d = p.data_ptr<float>();
  for (int64_t i = 0; i < p.size(0); ++i) m.mx += d[2 * i], m.my += d[2 * i + 1];
  m.mx /= m.n, m.my /= m.n;
  for (int64_t i = 0; i < p.size(0); ++i) {
    double dx = d[2 * i] - m.mx, dy = d[2 * i + 1] - m.my;
    m.vx += dx * dx, m.vy += dy * dy, m.cxy += dx * dy;
  }
  m.vx /= m.n, m.vy /= m.n, m.cxy /= m.n;
  return m;
}
}  // namespace

TEST_CASE("toy 2-D distributions match their closed-form moments") {
  const int64_t n = 200000;
  Generator g(11);
  // tolerances: 5 standard errors of the mean (sqrt(var/n)) and of the variance (~ var·sqrt(2/n), widened
  // for the non-Gaussian shapes by their kurtosis, bounded by 3x)
  auto near_mean = [&](double got, double want, double var) { CHECK(std::fabs(got - want) < 5 * std::sqrt(var / n)); };
  auto near_var = [&](double got, double want) { CHECK(std::fabs(got - want) < 15 * want * std::sqrt(2.0 / n)); };

  Moments r = moments(ring_gaussians(n, g, 8, 2.0, 0.1));
  double vr = 2.0 * 2.0 / 2 + 0.01;
  near_mean(r.mx, 0, vr), near_mean(r.my, 0, vr), near_var(r.vx, vr), near_var(r.vy, vr);
  CHECK(std::fabs(r.cxy) < 5 * vr / std::sqrt(double(n)));

  Moments gr = moments(grid_gaussians(n, g, 5, 1.0, 0.05));
  double vg = 1.0 * (25 - 1) / 12.0 + 0.0025;
  near_mean(gr.mx, 0, vg), near_mean(gr.my, 0, vg), near_var(gr.vx, vg), near_var(gr.vy, vg);

  Moments m = moments(two_moons(n, g, 0.1));
  double mvx = 0.75 + 0.01, mvy = 9.0 / 16 - 1 / M_PI + 0.01;
  near_mean(m.mx, 0.5, mvx), near_mean(m.my, 0.25, mvy), near_var(m.vx, mvx), near_var(m.vy, mvy);

  Tensor sr = swiss_roll(n, g, 0.0, 1.0);
  Moments s = moments(sr);
  double r2 = 39 * M_PI * M_PI / 4, vs = r2 / 2;  // each coordinate's variance is about half of E|x|²
  near_mean(s.mx, 2.0, vs), near_mean(s.my, 2.0 / (3 * M_PI), vs);
  double e2 = s.vx + s.vy + s.mx * s.mx + s.my * s.my;
  double sd_t2 = (4.5 * 4.5 - 1.5 * 1.5) * M_PI * M_PI / std::sqrt(12.0);  // t² spans [a², b²]: sd about this
  CHECK(std::fabs(e2 - r2) < 5 * sd_t2 / std::sqrt(double(n)));  // E|x|² = E t², t ~ U[3π/2, 9π/2]
  CHECK(std::fabs(std::sqrt(sr.at({0, 0}) * sr.at({0, 0}) + sr.at({0, 1}) * sr.at({0, 1})) - 3 * M_PI) <= 1.5 * M_PI);

  Generator a(3), b(3);
  CHECK(toy2d("moons", 100, a).to_vector() == two_moons(100, b).to_vector());
  CHECK(toy2d("swiss_roll", 10, a).shape() == Shape{10, 2});
  check_error([&] { toy2d("spiral", 10, a); }, {"unknown distribution 'spiral'", "ring, grid, moons, swiss_roll"});
}

// ============================================================================ images

TEST_CASE("PNG files round trip; grids have the documented layout") {
  TempDir dir;
  Image gray(7, 5, 1), rgb(4, 3, 3);
  for (size_t i = 0; i < gray.pixels.size(); ++i) gray.pixels[i] = uint8_t(i * 7);
  for (size_t i = 0; i < rgb.pixels.size(); ++i) rgb.pixels[i] = uint8_t(255 - i * 5);
  write_png(dir / "gray.png", gray);
  write_png(dir / "rgb.png", rgb);
  Image g2 = read_png(dir / "gray.png"), r2 = read_png(dir / "rgb.png");
  CHECK((g2.width == 7 && g2.height == 5 && g2.channels == 1));
  CHECK(g2.pixels == gray.pixels);
  CHECK((r2.width == 4 && r2.height == 3 && r2.channels == 3));
  CHECK(r2.pixels == rgb.pixels);
  CHECK(read_bytes(dir / "gray.png").substr(1, 3) == "PNG");
  write_bytes(dir / "bad.png", "not a png");
  check_error([&] { read_png(dir / "bad.png"); }, {dir / "bad.png"});

  // [-1, 1] images: -1 -> 0, 0 -> 128, 1 -> 255, clamped outside
  Tensor t = from_vector(std::vector<double>{-1, 0, 1, 2, -3, 0.5}, {1, 2, 3});
  Image ti = tensor_to_image(t, -1, 1);
  CHECK(ti.pixels == std::vector<uint8_t>{0, 128, 255, 255, 0, 191});

  // 5 images of 1x3x4 in 2 per row with padding 1: width 2·(4+1)+1 = 11, height 3·(3+1)+1 = 13
  Tensor imgs = full({5, 1, 3, 4}, 1.0);
  imgs.select(0, 3).fill_(0.0);
  GridOptions go;
  go.nrow = 2, go.padding = 1, go.pad_value = 77;
  Image grid = image_grid(imgs, go);
  CHECK((grid.width == 11 && grid.height == 13 && grid.channels == 1));
  CHECK(grid.at(0, 0)[0] == 77);
  CHECK(grid.at(1, 1)[0] == 255);      // image 0
  CHECK(grid.at(6, 5)[0] == 0);        // image 3: row 1, column 1
  CHECK(grid.at(1, 9)[0] == 255);      // image 4: row 2, column 0
  CHECK(grid.at(6, 9)[0] == 77);       // the missing 6th slot stays padding
  save_image_grid(dir / "grid.png", imgs, go);
  CHECK(read_png(dir / "grid.png").pixels == grid.pixels);
}

TEST_CASE("line plots: a PNG of the requested size with the series drawn in their colours") {
  TempDir dir;
  PlotSeries loss{"train loss", {}, {}}, val{"val loss", {}, {}};
  for (int64_t i = 0; i <= 200; ++i) {
    loss.x.push_back(double(i * 10));
    loss.y.push_back(2.5 * std::exp(-double(i) / 40) + 0.1);
    if (i % 20 == 0) val.x.push_back(double(i * 10)), val.y.push_back(2.6 * std::exp(-double(i) / 45) + 0.15);
  }
  loss.y[50] = NAN;  // a gap, not a crash
  PlotOptions po;
  po.title = "MNIST MLP";
  po.ylabel = "loss";
  save_plot(dir / "curves.png", {loss, val}, po);
  Image img = read_png(dir / "curves.png");
  CHECK((img.width == 800 && img.height == 480 && img.channels == 3));
  auto count = [&](const uint8_t rgb[3]) {
    int64_t n = 0;
    for (int64_t y = 0; y < img.height; ++y)
      for (int64_t x = 0; x < img.width; ++x) n += std::equal(rgb, rgb + 3, img.at(x, y));
    return n;
  };
  const uint8_t blue[3] = {31, 119, 180}, orange[3] = {255, 127, 14}, black[3] = {0, 0, 0};
  CHECK(count(blue) > 800);   // the train curve spans the width
  CHECK(count(orange) > 400);
  CHECK(count(black) > 300);  // text

  po.log_y = true, po.width = 400, po.height = 300;
  Image small = plot_lines({loss, val, PlotSeries{"empty", {}, {}}}, po);
  CHECK((small.width == 400 && small.height == 300));
  CHECK(text_width("abc", 2) == 34);
  check_error([&] { plot_lines({PlotSeries{"bad", {1, 2}, {1}}}); }, {"'bad'", "2 x and 1 y"});
}

// #21: the data types check their options (validation only; the behaviour of valid options is unchanged).
TEST_CASE("data options: empty batches, non-finite imbalance and oversized composite canvases are errors") {
  Generator g(0);
  Tensor tokens = arange(0.0, 100.0, 1.0, DType::i64);
  // Before: batch 0 gave an empty batch, and the LM's loss failed with "mean: reducing over zero elements".
  CHECK_THROWS_WITH_AS(random_windows(tokens, 0, 8, g), "random_windows: batch must be >= 1, got 0", Error);
  CHECK_THROWS_WITH_AS(random_windows(tokens, 4, int64_t(1) << 62, g),
                       doctest::Contains("100 tokens are too few for windows of 4611686018427387904 + 1"), Error);
  CHECK(random_windows(tokens, 2, 99, g).shape() == Shape{2, 100});  // the longest window that fits
  CHECK_THROWS_WITH_AS(imbalanced_class_probs(INFINITY), "imbalanced_class_probs: ratio must be a finite number >= 1, got inf",
                       Error);
  CHECK_THROWS_WITH_AS(imbalanced_class_probs(std::nan("")), doctest::Contains("got nan"), Error);
  CHECK_THROWS_WITH_AS((void)DataLoader(std::make_shared<RowsDataset>(10), LoaderOptions{.batch_size = 0}),
                       "DataLoader: batch_size must be >= 1, got 0", Error);

  Tensor images = zeros({20, 28, 28});
  std::vector<int64_t> digit(20);
  for (size_t i = 0; i < digit.size(); ++i) digit[i] = int64_t(i % 10);
  Tensor labels = from_vector(digit, {20});
  CompositeOptions o;
  o.height = 28, o.width = 56, o.min_digits = 1, o.max_digits = int64_t(1) << 62, o.min_gap = 1;
  // Before: (max_digits - 1) * min_gap overflowed (undefined behaviour) on the way to "cannot hold".
  CHECK_THROWS_WITH_AS((void)CompositeDigits(images, labels, o), doctest::Contains("must be at most the width 56"), Error);
  o.max_digits = 2, o.width = int64_t(1) << 40;
  CHECK_THROWS_WITH_AS((void)CompositeDigits(images, labels, o), doctest::Contains("height and width must be in [1, 65536]"),
                       Error);
  o.width = 56, o.size = -1;
  CHECK_THROWS_WITH_AS((void)CompositeDigits(images, labels, o), "CompositeDigits: size and min_gap must be >= 0, got -1 and 1",
                       Error);
}
