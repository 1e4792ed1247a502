// safetensors: round trips for every dtype, half-precision conversion accuracy, the byte layout PyTorch's
// safetensors writes, corrupted files (each a clear error naming the file and the tensor, never a crash),
// and atomic writes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>

#include "tests/test_files.h"
#include "core/ops.h"
#include "core/serialize.h"

using namespace liandan;
namespace fs = std::filesystem;

namespace {

using liandan::testing::check_error;
using liandan::testing::read_bytes;
using liandan::testing::TempDir;
using liandan::testing::write_bytes;


std::string hex_bytes(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}
std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}
// A file with the given header text (no padding added) and data bytes.
std::string st_file(const std::string& header, const std::string& data) { return u64le(header.size()) + header + data; }

bool same_values(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.to_vector() == b.to_vector();
}

// The file PyTorch's safetensors writes for these tensors (generated with torch 1.13: each tensor's bytes
// via .view(torch.uint8), header json.dumps(separators=(",", ":")) padded with spaces to 8 bytes; the
// serde_json writer of the safetensors package produces the same text).
const char* kRefHeader =
    R"({"__metadata__":{"format":"pt","step":"42"},"bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
    R"("w64":{"dtype":"F64","shape":[1,2],"data_offsets":[12,28]},"emb":{"dtype":"BF16","shape":[2,2],"data_offsets":[28,36]},)"
    R"("half":{"dtype":"F16","shape":[3],"data_offsets":[36,42]},"ids":{"dtype":"I64","shape":[2],"data_offsets":[42,58]},)"
    R"("i32":{"dtype":"I32","shape":[2],"data_offsets":[58,66]},"i16":{"dtype":"I16","shape":[2],"data_offsets":[66,70]},)"
    R"("i8":{"dtype":"I8","shape":[2],"data_offsets":[70,72]},"u8":{"dtype":"U8","shape":[2],"data_offsets":[72,74]},)"
    R"("mask":{"dtype":"BOOL","shape":[3],"data_offsets":[74,77]},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[77,77]}} )";
const char* kRefData =
    "0000003f0000a0bf00004040555555555555d53f00000000000000c0803f20c0cd3d4940662eff7b8e860700000000000000fdffffffff"
    "ffffff00000080050000000080ff7f807f00ff010001";

}  // namespace

TEST_CASE("round trip of f32, f64 and i64 tensors with metadata, in order") {
  TempDir dir;
  Generator g(1);
  Tensor a = randn({3, 4}, g), b = randn({2, 2, 2}, g, DType::f64), c = from_vector(std::vector<int64_t>{-5, 0, 1LL << 40}, {3});
  Tensor scalar = scalar_tensor(2.5), empty_t = zeros({0, 7});
  Tensor strided = randn({4, 6}, g).t().slice(0, 0, 6, 2);  // non-contiguous source
  NamedTensors ts = {{"z.weight", a}, {"a.bias", b}, {"ids", c}, {"scalar", scalar}, {"empty", empty_t},
                     {"strided", strided}};
  Metadata md = {{"step", "1200"}, {"config", "{\"d\": 4}"}, {"unicode", "π ≈ 3.14"}};
  std::string p = dir / "model.safetensors";
  save_safetensors(p, ts, md);
  auto r = load_safetensors(p);
  REQUIRE(r.tensors.size() == ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    CAPTURE(ts[i].first);
    CHECK(r.tensors[i].first == ts[i].first);  // order kept
    CHECK(same_values(r.tensors[i].second, ts[i].second));
    CHECK(r.tensors[i].second.is_contiguous());
  }
  CHECK(r.metadata == md);
  CHECK(same_values(r.at("ids"), c));
  CHECK_THROWS_WITH_AS(r.at("nope"), doctest::Contains("nope"), Error);
  // The data section starts 8-byte aligned, as the reference writer pads the header.
  std::string bytes = read_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
}

TEST_CASE("an empty tensor list and an empty file name list round trip") {
  TempDir dir;
  std::string p = dir / "e.safetensors";
  save_safetensors(p, {});
  auto r = load_safetensors(p);
  CHECK(r.tensors.empty());
  CHECK(r.metadata.empty());
}

TEST_CASE("reads the layout PyTorch's safetensors writes, every dtype") {
  TempDir dir;
  std::string p = dir / "ref.safetensors";
  write_bytes(p, st_file(kRefHeader, hex_bytes(kRefData)));
  auto r = load_safetensors(p);
  CHECK(r.metadata == Metadata{{"format", "pt"}, {"step", "42"}});
  std::vector<std::string> names;
  for (auto& [n, t] : r.tensors) names.push_back(n);
  CHECK(names == std::vector<std::string>{"bias", "w64", "emb", "half", "ids", "i32", "i16", "i8", "u8", "mask", "empty"});
  CHECK(r.at("bias").dtype() == DType::f32);
  CHECK(r.at("bias").to_vector() == std::vector<double>{0.5, -1.25, 3.0});
  CHECK(r.at("w64").dtype() == DType::f64);
  CHECK(r.at("w64").shape() == Shape{1, 2});
  CHECK(r.at("w64").to_vector() == std::vector<double>{1.0 / 3.0, -2.0});
  // bf16 / f16 values as torch decodes them
  CHECK(r.at("emb").dtype() == DType::f32);
  CHECK(r.at("emb").to_vector() == std::vector<double>{1.0, -2.5, 0.10009765625, 3.140625});
  CHECK(r.at("half").to_vector() == std::vector<double>{0.0999755859375, 65504.0, -0.00010001659393310547});
  CHECK(r.at("ids").dtype() == DType::i64);
  CHECK(r.at("ids").to_vector() == std::vector<double>{7, -3});
  CHECK(r.at("i32").to_vector() == std::vector<double>{-2147483648.0, 5});
  CHECK(r.at("i16").to_vector() == std::vector<double>{-32768, 32767});
  CHECK(r.at("i8").to_vector() == std::vector<double>{-128, 127});
  CHECK(r.at("u8").to_vector() == std::vector<double>{0, 255});
  CHECK(r.at("mask").dtype() == DType::i64);
  CHECK(r.at("mask").to_vector() == std::vector<double>{1, 0, 1});
  CHECK(r.at("empty").shape() == Shape{0, 3});
}

TEST_CASE("writes the same bytes as PyTorch's safetensors for the same tensors") {
  TempDir dir;
  std::string p = dir / "ours.safetensors";
  NamedTensors ts = {{"bias", from_vector(std::vector<float>{0.5f, -1.25f, 3.0f}, {3})},
                     {"w64", from_vector(std::vector<double>{1.0 / 3.0, -2.0}, {1, 2}, DType::f64)},
                     {"ids", from_vector(std::vector<int64_t>{7, -3}, {2})}};
  save_safetensors(p, ts, {{"format", "pt"}, {"step", "42"}}, {.checksums = false});
  // Generated by tests' companion script with torch (see kRefHeader): header 224 bytes with padding.
  std::string header =
      R"({"__metadata__":{"format":"pt","step":"42"},"bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
      R"("w64":{"dtype":"F64","shape":[1,2],"data_offsets":[12,28]},"ids":{"dtype":"I64","shape":[2],"data_offsets":[28,44]}}       )";
  REQUIRE(header.size() == 224);
  std::string expected =
      st_file(header, hex_bytes("0000003f0000a0bf00004040555555555555d53f00000000000000c00700000000000000fdffffffffffffff"));
  CHECK(read_bytes(p) == expected);
  // With checksums (the default) the one difference is the "liandan.checksums" metadata entry.
  std::string pc = dir / "checked.safetensors";
  save_safetensors(pc, ts, {{"format", "pt"}, {"step", "42"}});
  std::string checked = read_bytes(pc);
  CHECK(checked.substr(checked.size() - 44) == expected.substr(expected.size() - 44));
  CHECK(checked.find("\"liandan.checksums\":\"{\\\"algorithm\\\":\\\"xxh3_64\\\"") != std::string::npos);

  // Storing as bf16 / f16 gives torch's bits (x.to(torch.bfloat16) / torch.float16).
  std::string pb = dir / "bf16.safetensors";
  save_safetensors(pb, {{"emb", from_vector(std::vector<float>{1.0f, -2.5f, 0.1f, 3.14159f}, {2, 2})}}, {},
                   {FloatFormat::bf16});
  std::string bytes = read_bytes(pb);
  CHECK(bytes.substr(bytes.size() - 8) == hex_bytes("803f20c0cd3d4940"));
  CHECK(bytes.find("\"dtype\":\"BF16\"") != std::string::npos);
  std::string ph = dir / "f16.safetensors";
  save_safetensors(ph, {{"half", from_vector(std::vector<double>{0.1, 65504.0, -0.0001}, {3}, DType::f64)}}, {},
                   {FloatFormat::f16});
  bytes = read_bytes(ph);
  CHECK(bytes.substr(bytes.size() - 6) == hex_bytes("662eff7b8e86"));
}

TEST_CASE("half-precision codes: exhaustive round trip and torch's bits") {
  for (uint32_t h = 0; h < 65536; ++h) {
    float fb = bf16_to_float(uint16_t(h)), fh = f16_to_float(uint16_t(h));
    if (std::isnan(fb)) CHECK(std::isnan(bf16_to_float(float_to_bf16(fb))));
    else if (float_to_bf16(fb) != h) FAIL("bf16 code ", h, " does not round trip");
    if (std::isnan(fh)) CHECK(std::isnan(f16_to_float(float_to_f16(fh))));
    else if (float_to_f16(fh) != h) FAIL("f16 code ", h, " does not round trip");
  }
  // torch: torch.tensor([...]).to(torch.float16).view(torch.int16)
  std::vector<float> xs = {0.1f, 65504.0f, -0.0001f, 65520.0f, 1e-8f, 3e-8f, 0x1p-25f, 6.1e-5f};
  std::vector<uint16_t> want = {0x2e66, 0x7bff, 0x868e, 0x7c00, 0x0, 0x1, 0x0, 0x3ff};
  for (size_t i = 0; i < xs.size(); ++i) {
    CAPTURE(xs[i]);
    CHECK(float_to_f16(xs[i]) == want[i]);
  }
  CHECK(float_to_bf16(INFINITY) == 0x7F80);
  CHECK(float_to_f16(-INFINITY) == 0xFC00);
  CHECK(std::isnan(f16_to_float(float_to_f16(NAN))));
  CHECK(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST_CASE("float to bf16/f16 rounds to the nearest code, ties to even") {
  // Check against the neighbouring codes: the chosen one is nearest, and on a tie its last bit is 0.
  std::mt19937 rng(7);
  auto check_nearest = [](float x, uint16_t code, float (*dec)(uint16_t)) {
    double v = dec(code);
    if (std::isinf(v)) return true;  // overflow handled by the exact cases above
    double err = std::fabs(double(x) - v);
    for (int d : {-1, 1}) {
      uint16_t nb = uint16_t(code + d);
      if ((nb & 0x7FFF) >= 0x7C00 && dec == f16_to_float) continue;
      double w = dec(nb);
      if (std::isnan(w) || std::isinf(w) || (std::signbit(w) != std::signbit(v) && w != 0)) continue;
      double e2 = std::fabs(double(x) - w);
      if (e2 < err) return false;
      if (e2 == err && (code & 1)) return false;
    }
    return true;
  };
  int bad = 0;
  for (int i = 0; i < 200000; ++i) {
    // random bit patterns in the finite range of each format, plus exact ties
    uint32_t bits = rng();
    float xb = std::bit_cast<float>(bits & 0xBFFFFFFFu);  // |x| < 2 keeps bf16 far from overflow
    float xh = std::ldexp(std::bit_cast<float>((bits & 0x807FFFFFu) | 0x3F800000u), int(rng() % 40) - 25);
    if (i % 4 == 0) xh = std::bit_cast<float>((std::bit_cast<uint32_t>(xh) & ~0x1FFFu) | 0x1000u);  // f16 tie
    if (i % 4 == 1) xb = std::bit_cast<float>((std::bit_cast<uint32_t>(xb) & ~0xFFFFu) | 0x8000u);  // bf16 tie
    if (std::fabs(xh) >= 65504.0f) continue;
    bad += !check_nearest(xb, float_to_bf16(xb), bf16_to_float);
    bad += !check_nearest(xh, float_to_f16(xh), f16_to_float);
  }
  CHECK(bad == 0);
}

TEST_CASE("bf16 / f16 storage: read back as f32 within half an ulp; f64 is rounded once") {
  TempDir dir;
  Generator g(3);
  Tensor x = randn({1000}, g), x64 = mul(randn({1000}, g, DType::f64), 100.0);
  for (FloatFormat ff : {FloatFormat::bf16, FloatFormat::f16}) {
    std::string p = dir / "h.safetensors";
    save_safetensors(p, {{"x", x}, {"x64", x64}}, {}, {ff});
    auto r = load_safetensors(p);
    for (const char* n : {"x", "x64"}) {
      Tensor src = n[1] == '6' ? x64 : x, got = r.at(n);
      CHECK(got.dtype() == DType::f32);  // halves are read into f32
      auto vs = src.to_vector(), vg = got.to_vector();
      double rel = ff == FloatFormat::bf16 ? 0x1p-8 : 0x1p-11;  // half an ulp (8 / 11 significant bits)
      double worst = 0;
      for (size_t i = 0; i < vs.size(); ++i) {
        if (std::fabs(vs[i]) < 1e-4) continue;  // f16 subnormals: absolute error instead
        worst = std::max(worst, std::fabs(vg[i] - vs[i]) / std::fabs(vs[i]));
      }
      CAPTURE(n);
      CHECK(worst <= rel);
      CHECK(worst > 0);  // it really was converted
    }
  }
  // 1 + 2^-8 + 2^-30 lies just above the bf16 tie between 1 and 1 + 2^-7. Going through f32 with
  // round-to-nearest would land exactly on the tie and round down to 1.
  std::string p = dir / "d.safetensors";
  save_safetensors(p, {{"d", from_vector(std::vector<double>{1 + 0x1p-8 + 0x1p-30, -(1 + 0x1p-8 + 0x1p-30)}, {2}, DType::f64)}},
                   {}, {FloatFormat::bf16});
  CHECK(load_safetensors(p).at("d").to_vector() == std::vector<double>{1 + 0x1p-7, -(1 + 0x1p-7)});
  save_safetensors(p, {{"d", from_vector(std::vector<double>{1 + 0x1p-11 + 0x1p-40}, {1}, DType::f64)}}, {},
                   {FloatFormat::f16});
  CHECK(load_safetensors(p).at("d").item() == 1 + 0x1p-10);
}

TEST_CASE("SafetensorsReader reads chosen tensors and describes entries") {
  TempDir dir;
  std::string p = dir / "ref.safetensors";
  write_bytes(p, st_file(kRefHeader, hex_bytes(kRefData)));
  SafetensorsReader r(p);
  CHECK(r.entries().size() == 11);
  CHECK(r.contains("emb"));
  CHECK(!r.contains("nope"));
  CHECK(r.entry("emb").dtype == StDType::BF16);
  CHECK(r.entry("emb").shape == Shape{2, 2});
  CHECK(r.entry("i32").begin == 58);
  CHECK(r.read("u8").to_vector() == std::vector<double>{0, 255});
  CHECK_THROWS_WITH_AS(r.read("nope"), doctest::Contains("ref.safetensors"), Error);
  CHECK(std::string(st_dtype_name(StDType::BF16)) == "BF16");
  CHECK(st_dtype_size(StDType::F64) == 8);
  CHECK(st_dtype_target(StDType::U8) == DType::i64);
}

TEST_CASE("corrupted files are clear errors naming the file, the tensor and the field") {
  TempDir dir;
  std::string p = dir / "bad.safetensors";
  auto expect_error = [&](const std::string& bytes, std::vector<std::string> parts) {
    write_bytes(p, bytes);
    std::string msg;
    try {
      load_safetensors(p);
    } catch (const Error& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    REQUIRE(!msg.empty());
    CHECK(msg.find("bad.safetensors") != std::string::npos);
    for (auto& s : parts) {
      CAPTURE(s);
      CHECK(msg.find(s) != std::string::npos);
    }
  };
  auto entry = [](const std::string& name, const std::string& body) {
    return "{\"" + name + "\":{" + body + "}}";
  };
  std::string valid = st_file(kRefHeader, hex_bytes(kRefData));

  SUBCASE("too short for the header length") { expect_error("abc", {"too short"}); }
  SUBCASE("empty file") { expect_error("", {"0 bytes"}); }
  SUBCASE("header length beyond the file") { expect_error(u64le(1000) + "{}", {"header length 1000", "beyond"}); }
  SUBCASE("huge header length") { expect_error(u64le(~0ull) + "{}", {"beyond"}); }
  SUBCASE("truncated data") { expect_error(valid.substr(0, valid.size() - 2), {"\"mask\"", "data_offsets", "out of range", "75 bytes"}); }
  SUBCASE("truncated header") { expect_error(valid.substr(0, 100), {"beyond"}); }
  SUBCASE("invalid JSON") { expect_error(st_file("{\"a\": {\"dtype\": ", ""), {"not valid JSON"}); }
  SUBCASE("JSON not an object") { expect_error(st_file("[1, 2, 3]", ""), {"not a JSON object", "array"}); }
  SUBCASE("entry not an object") { expect_error(st_file("{\"w\": 3}", ""), {"\"w\"", "must be an object"}); }
  SUBCASE("unknown dtype") {
    expect_error(st_file(entry("w", "\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]"), "abcd"),
                 {"\"w\"", "dtype", "unknown dtype \"F17\""});
  }
  SUBCASE("dtype of the format that liandan does not support") {
    expect_error(st_file(entry("w", "\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]"), "a"),
                 {"\"w\"", "F8_E4M3", "not supported"});
  }
  SUBCASE("dtype not a string") {
    expect_error(st_file(entry("w", "\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]"), "abcd"), {"\"w\"", "\"dtype\""});
  }
  SUBCASE("missing fields") {
    expect_error(st_file(entry("w", "\"shape\":[1],\"data_offsets\":[0,4]"), "abcd"), {"\"w\"", "missing field \"dtype\""});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"data_offsets\":[0,4]"), "abcd"), {"\"w\"", "missing field \"shape\""});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[1]"), "abcd"), {"\"w\"", "missing field \"data_offsets\""});
  }
  SUBCASE("shape and byte count disagree") {
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]"), std::string(20, 'x')),
                 {"\"w\"", "[2, 3]", "24 bytes", "hold 20"});
  }
  SUBCASE("non-integer, negative or non-numeric shape") {
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]"), std::string(8, 'x')),
                 {"\"w\"", "\"shape\"", "non-negative integers", "2.5"});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), std::string(4, 'x')),
                 {"\"w\"", "\"shape\"", "-1"});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]"), std::string(8, 'x')),
                 {"\"w\"", "\"shape\""});
  }
  SUBCASE("shape with more elements than int64 can count") {
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]"), "12345678"),
                 {"\"w\"", "too many elements"});
  }
  SUBCASE("offsets out of range, reversed or malformed") {
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]"), std::string(8, 'x')),
                 {"\"w\"", "data_offsets", "out of range", "8 bytes"});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]"), std::string(8, 'x')),
                 {"\"w\"", "begin is after end"});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), std::string(8, 'x')),
                 {"\"w\"", "data_offsets", "[begin, end]"});
    expect_error(st_file(entry("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), std::string(8, 'x')),
                 {"\"w\"", "data_offsets"});
  }
  SUBCASE("overlapping tensors") {
    expect_error(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         std::string(12, 'x')),
                 {"\"a\"", "\"b\"", "overlap", "data_offsets"});
  }
  SUBCASE("duplicate tensor names") {
    expect_error(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                         std::string(8, 'x')),
                 {"duplicate", "\"a\""});
  }
  SUBCASE("metadata that is not a string map") {
    expect_error(st_file(R"({"__metadata__":{"step":3}})", ""), {"__metadata__", "\"step\"", "string"});
    expect_error(st_file(R"({"__metadata__":[1]})", ""), {"__metadata__", "object"});
  }
  SUBCASE("missing file and directories") {
    std::string msg;
    try {
      load_safetensors(dir / "does_not_exist.safetensors");
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK(msg.find("does_not_exist.safetensors") != std::string::npos);
    CHECK(msg.find("cannot open") != std::string::npos);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path.string()), doctest::Contains("not a regular file"), Error);
  }
}

namespace {

// The Error message of loading `p`, or "" when it loads (every tensor read, so every checksum checked).
std::string load_error(const std::string& p) {
  try {
    load_safetensors(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
uint64_t header_len(const std::string& bytes) {
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return n;
}
std::string with_header_len(std::string bytes, uint64_t n) {
  std::memcpy(bytes.data(), &n, 8);
  return bytes;
}
// `bytes` with the first occurrence of `from` in its header replaced by `to`.
std::string edit_header(std::string bytes, const std::string& from, const std::string& to) {
  size_t at = bytes.find(from);
  REQUIRE(at != std::string::npos);
  REQUIRE(at < 8 + header_len(bytes));
  return bytes.replace(at, from.size(), to);
}
bool contains_all(const std::string& msg, const std::vector<std::string>& parts) {
  for (auto& s : parts)
    if (msg.find(s) == std::string::npos) return false;
  return true;
}

// A small checkpoint as liandan writes it (with checksums): three tensors and metadata.
struct Written {
  TempDir dir;
  std::string path = dir / "ckpt.safetensors";
  Tensor w, b, ids;
  explicit Written(SaveOptions opt = {}, const std::string& note = "x") {
    Generator g(5);
    w = randn({2, 3}, g);
    b = randn({3}, g);
    ids = from_vector(std::vector<int64_t>{4, -1}, {2});
    save_safetensors(path, {{"model.w", w}, {"model.b", b}, {"ids", ids}}, {{"step", "1200"}, {"note", note}}, opt);
  }
  std::string bytes() const { return read_bytes(path); }
  std::string damaged(const std::string& bytes) const {
    std::string q = dir / "damaged.safetensors";
    write_bytes(q, bytes);
    return q;
  }
};

}  // namespace

TEST_CASE("every byte of a file is accounted for: trailing, inserted or missing bytes and wrong lengths are errors") {
  // Each of these loaded before (with shifted or partial weights, or silently ignored bytes).
  for (bool checksums : {false, true}) {
    CAPTURE(checksums);
    // A note whose length gives the header space padding (its JSON not a multiple of 8 bytes).
    auto padded = [&](const std::string& note) {
      std::string b = Written({.checksums = checksums}, note).bytes();
      return b[8 + header_len(b) - 1] == ' ';
    };
    std::string note = "x";
    while (!padded(note)) note += "x";  // each x lengthens the JSON by one byte
    Written f({.checksums = checksums}, note);
    const std::string good = f.bytes();
    REQUIRE(load_error(f.path).empty());
    const uint64_t n = header_len(good);
    REQUIRE(good[8 + n - 1] == ' ');

    // Trailing bytes after the last tensor.
    std::string msg = load_error(f.damaged(good + "\x01\x02\x03"));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "3 unaccounted byte(s) after tensor \"ids\"", "data_offsets"}), msg);
    // Header length one too short: the last padding byte would become the first data byte, shifting every tensor.
    msg = load_error(f.damaged(with_header_len(good, n - 1)));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "1 unaccounted byte(s)", "header length " + std::to_string(n - 1)}),
                  msg);
    // Header length one too long: the first data byte would end the header.
    msg = load_error(f.damaged(with_header_len(good, n + 1)));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "header length " + std::to_string(n + 1)}), msg);
    // A byte inserted into, or removed from, the data.
    std::string ins = good, del = good;
    ins.insert(8 + n + 10, 1, '\x7f');
    del.erase(8 + n + 10, 1);
    msg = load_error(f.damaged(ins));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "1 unaccounted byte(s) after tensor \"ids\""}), msg);
    msg = load_error(f.damaged(del));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "\"ids\"", "out of range"}), msg);
    // Something other than spaces after the header's JSON, or before it.
    std::string t = good;
    t[8 + n - 1] = '\n';
    msg = load_error(f.damaged(t));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "must end with '}'", "0x0a"}), msg);
    t = good;
    t.insert(8, 1, ' ');  // a leading space instead of the last padding byte
    t.erase(8 + n, 1);
    msg = load_error(f.damaged(t));
    CHECK_MESSAGE(contains_all(msg, {"damaged.safetensors", "must start with '{'"}), msg);
  }
}

TEST_CASE("the tensors must tile the data buffer: no gap, no overlap, starting at 0") {
  TempDir dir;
  std::string p = dir / "bad.safetensors";
  auto err = [&](const std::string& header, const std::string& data) {
    write_bytes(p, st_file(header, data));
    return load_error(p);
  };
  const std::string data(24, '\x11');
  // w is 4 F32 (16 bytes) and b 2 F32 (8 bytes): valid.
  REQUIRE(err(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
              data)
              .empty());
  // w relabelled F16 over half its bytes: shape and byte count agree, but bytes [8, 16) belong to nothing.
  std::string msg = err(
      R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})", data);
  CAPTURE(msg);
  CHECK(contains_all(msg, {"bad.safetensors", "tensor \"b\"", "data_offsets", "leaves bytes [8, 16)", "after tensor \"w\""}));
  // ... and relabelled F16 with the same offsets: the byte count disagrees with the shape.
  msg = err(R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
            data);
  CHECK(contains_all(msg, {"bad.safetensors", "\"w\"", "needs 8 bytes", "hold 16"}));
  // A gap before the first tensor.
  msg = err(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", data);
  CHECK(contains_all(msg, {"bad.safetensors", "\"w\"", "leaves bytes [0, 8)", "at its start"}));
  // An empty tensor must sit on a boundary, not inside another tensor's bytes.
  msg = err(R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
            data);
  CHECK(contains_all(msg, {"bad.safetensors", "\"w\"", "\"e\"", "overlap"}));
  CHECK(err(R"({"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"e":{"dtype":"F32","shape":[0],"data_offsets":[24,24]}})",
            data)
            .empty());
}

TEST_CASE("checksums: every tensor and the metadata are verified; files without checksums still load") {
  Written f;
  const std::string good = f.bytes();
  {
    SafetensorsReader r(f.path);
    CHECK(r.has_checksums());
    CHECK(r.metadata() == Metadata{{"note", "x"}, {"step", "1200"}});  // the checksums key is not metadata
    auto c = load_safetensors(f.path);
    CHECK(c.metadata == Metadata{{"note", "x"}, {"step", "1200"}});
    CHECK(same_values(c.at("model.w"), f.w));
  }
  const uint64_t n = header_len(good);
  SafetensorsReader layout(f.path);
  const uint64_t w_begin = 8 + n + layout.entry("model.w").begin;

  SUBCASE("a flipped byte in a tensor's data names the tensor; the other tensors still read") {
    std::string t = good;
    t[w_begin + 5] ^= 0x04;
    std::string q = f.damaged(t);
    std::string msg = load_error(q);
    CAPTURE(msg);
    CHECK(contains_all(msg, {"damaged.safetensors", "tensor \"model.w\" fails its xxh3_64 checksum", "damaged"}));
    SafetensorsReader r(q);
    CHECK(same_values(r.read("model.b"), f.b));
    CHECK_THROWS_WITH_AS(r.read("model.w"), doctest::Contains("\"model.w\" fails its xxh3_64 checksum"), Error);
  }
  SUBCASE("the dtype or the shape changed in the header, the byte count kept") {
    std::string msg = load_error(f.damaged(edit_header(good, "\"dtype\":\"I64\"", "\"dtype\":\"F64\"")));
    CAPTURE(msg);
    CHECK(contains_all(msg, {"damaged.safetensors", "tensor \"ids\" fails its xxh3_64 checksum"}));
    msg = load_error(f.damaged(edit_header(good, "\"shape\":[2,3]", "\"shape\":[3,2]")));
    CHECK(contains_all(msg, {"damaged.safetensors", "tensor \"model.w\" fails its xxh3_64 checksum"}));
  }
  SUBCASE("a metadata value changed") {
    std::string msg = load_error(f.damaged(edit_header(good, "\"step\":\"1200\"", "\"step\":\"1208\"")));
    CAPTURE(msg);
    CHECK(contains_all(msg, {"damaged.safetensors", "the metadata fails its xxh3_64 checksum"}));
  }
  SUBCASE("a damaged checksums entry") {
    size_t at = good.find("\\\"model.w\\\":\\\"");
    REQUIRE(at != std::string::npos);
    std::string t = good;
    t[at + 14] = 'g';  // the digest's first digit
    std::string msg = load_error(f.damaged(t));
    CAPTURE(msg);
    CHECK(contains_all(msg, {"damaged.safetensors", "liandan.checksums", "\"model.w\"", "16 lowercase hex digits"}));
    msg = load_error(f.damaged(edit_header(good, "\\\"ids\\\":", "\\\"idz\\\":")));
    CHECK(contains_all(msg, {"damaged.safetensors", "liandan.checksums", "\"idz\", which is not in the file"}));
    msg = load_error(f.damaged(edit_header(good, "xxh3_64", "xxh3_65")));
    CHECK(contains_all(msg, {"damaged.safetensors", "unknown checksum algorithm \"xxh3_65\""}));
    // A damaged key would otherwise make the file look like one without checksums.
    msg = load_error(f.damaged(edit_header(good, "\"liandan.checksums\"", "\"liandan.checksumz\"")));
    CHECK(contains_all(msg, {"damaged.safetensors", "\"liandan.checksumz\" holds liandan checksums", "key is damaged"}));
  }
  SUBCASE("files without checksums (PyTorch, HF) load unverified") {
    TempDir dir;
    std::string p = dir / "ref.safetensors";
    write_bytes(p, st_file(kRefHeader, hex_bytes(kRefData)));
    CHECK(load_error(p).empty());
    CHECK(!SafetensorsReader(p).has_checksums());
    Written plain({.checksums = false});
    CHECK(plain.bytes().find("liandan.checksums") == std::string::npos);
    std::string t = plain.bytes();
    t[t.size() - 1] ^= 1;  // not detectable without checksums: it loads
    CHECK(load_error(plain.damaged(t)).empty());
  }
  SUBCASE("half-precision storage: the stored (converted) bytes are what is hashed") {
    Written h({.float_format = FloatFormat::bf16});
    auto c = load_safetensors(h.path);
    CHECK(c.at("model.w").dtype() == DType::f32);
    std::string t = h.bytes();
    SafetensorsReader r(h.path);
    t[8 + header_len(t) + r.entry("model.b").begin] ^= 0x40;
    CHECK(contains_all(load_error(h.damaged(t)), {"tensor \"model.b\" fails its xxh3_64 checksum"}));
  }
  SUBCASE("a checksums entry passed to the writer is replaced by the writer's own") {
    std::string q = f.dir / "again.safetensors";
    save_safetensors(q, {{"a", f.w}}, {{"liandan.checksums", "{\"algorithm\":\"bogus\"}"}, {"k", "v"}});
    CHECK(load_error(q).empty());
    CHECK(load_safetensors(q).metadata == Metadata{{"k", "v"}});
    // A value that would read as checksums under a damaged key is refused before the disk is touched.
    CHECK_THROWS_WITH_AS(save_safetensors(q, {{"a", f.w}}, {{"k", "{\"algorithm\":\"xxh3_64\",\"x\":1}"}}),
                         doctest::Contains("metadata entry \"k\""), Error);
    CHECK(load_safetensors(q).metadata == Metadata{{"k", "v"}});
  }
}

TEST_CASE("a path that is not a regular file is an error, never a hang (FIFO, directory, device)") {
  TempDir dir;
  std::string fifo = dir / "ckpt.safetensors";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // The load runs on another thread with a deadline. Should it block (in open(), waiting for a writer),
  // opening the FIFO read-write here releases it, and the test fails instead of hanging.
  auto fut = std::async(std::launch::async, [&] { return load_error(fifo); });
  if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    int fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK);
    fut.wait();
    if (fd >= 0) ::close(fd);
    FAIL("opening a FIFO blocked");
  }
  std::string msg = fut.get();
  CAPTURE(msg);
  CHECK(contains_all(msg, {"ckpt.safetensors", "not a regular file (a FIFO)"}));
  CHECK(contains_all(load_error(dir.path.string()), {"not a regular file (a directory)"}));
  CHECK(contains_all(load_error("/dev/null"), {"/dev/null", "not a regular file (a character device)"}));
}

TEST_CASE("random corruption of a valid file never crashes") {
  // Byte flips and truncations anywhere: the reader either loads something consistent or throws
  // liandan::Error; anything else (a crash, another exception type) fails the test.
  TempDir dir;
  std::string p = dir / "fuzz.safetensors";
  std::string valid = st_file(kRefHeader, hex_bytes(kRefData));
  std::mt19937 rng(11);
  int loaded = 0, rejected = 0, other = 0;
  for (int it = 0; it < 1500; ++it) {
    std::string b = valid;
    int kind = it % 3;
    if (kind == 0) {  // flip bytes of the header region (incl. the length)
      for (int k = 0; k < 1 + int(rng() % 3); ++k) b[rng() % 700] = char(rng());
    } else if (kind == 1) {  // truncate
      b.resize(rng() % b.size());
    } else {  // replace a digit or a quote of the header by another character
      size_t pos = 8 + rng() % (b.size() - 8 - 77);
      const char* repl = "0123456789\"{}[],:-.eE ";
      b[pos] = repl[rng() % std::strlen(repl)];
    }
    write_bytes(p, b);
    try {
      auto r = load_safetensors(p);
      for (auto& [n, t] : r.tensors) (void)t.to_vector();
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    } catch (...) {
      ++other;
    }
  }
  CHECK(other == 0);
  CHECK(rejected > 500);
  CHECK(loaded > 0);
}

TEST_CASE("with checksums, no single damage of a file loads: every bit flip, removed, inserted byte, truncation") {
  // Exhaustive over a small liandan-written file (header, padding, checksums, data): each damaged copy must be
  // refused with an Error naming it. (Before checksums, hundreds of these loaded other values; a damaged
  // "liandan.checksums" key made the file look unchecked.)
  Written f;
  const std::string good = f.bytes();
  const std::string q = f.dir / "damaged.safetensors";
  long tried = 0, refused = 0;
  std::string loaded;  // the first few that were not refused
  auto attempt = [&](const std::string& bytes, const std::string& what) {
    ++tried;
    write_bytes(q, bytes);
    std::string msg = load_error(q);
    if (msg.find("damaged.safetensors") != std::string::npos) ++refused;
    else if (tried - refused <= 5) loaded += what + (msg.empty() ? " loads" : ": " + msg) + "\n";
  };
  for (size_t at = 0; at < good.size(); ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string b = good;
      b[at] = char(uint8_t(b[at]) ^ uint8_t(1 << bit));
      attempt(b, "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " flipped");
    }
    attempt(std::string(good).erase(at, 1), "byte " + std::to_string(at) + " removed");
    attempt(std::string(good).insert(at, 1, at % 2 ? ' ' : '\x00'), "a byte inserted at " + std::to_string(at));
    attempt(good.substr(0, at), "truncated to " + std::to_string(at) + " bytes");
  }
  attempt(good + " ", "a space appended");
  CAPTURE(loaded);
  CHECK(loaded.empty());
  CHECK(refused == tried);
  CHECK(tried > 5000);
}

TEST_CASE("writes are atomic: a failed write leaves the old file intact and no temporary file") {
  TempDir dir;
  std::string p = dir / "ckpt.safetensors";
  Tensor w = from_vector(std::vector<float>{1, 2, 3}, {3});
  save_safetensors(p, {{"w", w}}, {{"step", "1"}});
  const std::string old = read_bytes(p);
  auto no_temp_files = [&] {
    for (auto& e : fs::directory_iterator(dir.path))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
    return true;
  };
  auto intact = [&] { return read_bytes(p) == old && load_safetensors(p).metadata.at("step") == "1"; };
  Tensor big = zeros({1 << 16});

  SUBCASE("invalid tensor lists are refused before the disk is touched") {
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", big}, {"a", w}}), doctest::Contains("duplicate tensor name \"a\""), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", big}, {"b", Tensor()}}), doctest::Contains("\"b\" is undefined"), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"", big}}), doctest::Contains("empty name"), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"__metadata__", big}}), doctest::Contains("reserved"), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"w", big}}, {{"note", "\xff\xfe"}}), doctest::Contains("cannot encode"),
                         Error);  // the JSON header must be UTF-8
    CHECK(intact());
    CHECK(no_temp_files());
  }
  SUBCASE("the write fails half way (file size limit)") {
    // RLIMIT_FSIZE makes write() fail with EFBIG once the temporary file reaches 4 KiB.
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    auto prev = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = saved;
    lim.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string msg;
    try {
      save_safetensors(p, {{"big", big}}, {{"step", "2"}});
    } catch (const Error& e) {
      msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, prev);
    CAPTURE(msg);
    CHECK(msg.find("ckpt.safetensors.tmp.") != std::string::npos);
    CHECK(msg.find("failed") != std::string::npos);
    CHECK(intact());
    CHECK(no_temp_files());
  }
  SUBCASE("the directory does not exist") {
    std::string q = dir / "missing/ckpt.safetensors";
    CHECK_THROWS_WITH_AS(save_safetensors(q, {{"w", w}}), doctest::Contains("missing/ckpt.safetensors.tmp."), Error);
    CHECK(!fs::exists(q));
  }
  SUBCASE("the target is a directory: the rename fails") {
    std::string q = dir / "adir";
    fs::create_directory(q);
    fs::create_directory(q + "/keep");
    CHECK_THROWS_WITH_AS(save_safetensors(q, {{"w", w}}), doctest::Contains("cannot rename"), Error);
    CHECK(fs::is_directory(q + "/keep"));
    CHECK(no_temp_files());
  }
  SUBCASE("a read-only directory") {
    fs::permissions(dir.path, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                    fs::perm_options::remove);
    bool root = ::geteuid() == 0;  // root writes anyway: then the save must simply succeed
    if (root) {
      save_safetensors(p, {{"w", big}});
      CHECK(load_safetensors(p).at("w").numel() == big.numel());
    } else {
      CHECK_THROWS_WITH_AS(save_safetensors(p, {{"w", big}}), doctest::Contains("cannot create"), Error);
      CHECK(intact());
    }
    fs::permissions(dir.path, fs::perms::owner_all, fs::perm_options::add);
    CHECK(no_temp_files());
  }
  SUBCASE("a successful overwrite replaces the file") {
    save_safetensors(p, {{"w", big}}, {{"step", "3"}});
    CHECK(load_safetensors(p).metadata.at("step") == "3");
    CHECK(no_temp_files());
  }
}
