// safetensors reader (mmap, validated header) and atomic writer. See core/serialize.h.
#include "core/serialize.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fileio.h"

// Header-only xxHash (XXH_INLINE_ALL): the hash inlines into this file, and nothing extra is linked into
// liandan_core or into the programs that use it.
// (GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 intrinsics as xxHash inlines them.)
#define XXH_INLINE_ALL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop

static_assert(std::endian::native == std::endian::little,
              "core/serialize.cpp reads and writes little-endian data with memcpy");

namespace liandan {

using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------- dtypes

namespace {

struct StDTypeInfo {
  StDType t;
  const char* name;
  size_t size;
  DType target;
};

constexpr StDTypeInfo kStDTypes[] = {
    {StDType::F64, "F64", 8, DType::f64},  {StDType::F32, "F32", 4, DType::f32},
    {StDType::F16, "F16", 2, DType::f32},  {StDType::BF16, "BF16", 2, DType::f32},
    {StDType::I64, "I64", 8, DType::i64},  {StDType::I32, "I32", 4, DType::i64},
    {StDType::I16, "I16", 2, DType::i64},  {StDType::I8, "I8", 1, DType::i64},
    {StDType::U32, "U32", 4, DType::i64},  {StDType::U16, "U16", 2, DType::i64},
    {StDType::U8, "U8", 1, DType::i64},    {StDType::BOOL, "BOOL", 1, DType::i64},
};

const StDTypeInfo& info(StDType t) {
  for (auto& i : kStDTypes)
    if (i.t == t) return i;
  LD_FAIL("safetensors: unknown dtype enum ", int(t));
}

// Types of the format that liandan cannot represent (named so that the error says "unsupported").
constexpr const char* kUnsupported[] = {"U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                        "F4", "C64", "F8_E4M3FNUZ", "F8_E5M2FNUZ"};

}  // namespace

const char* st_dtype_name(StDType t) { return info(t).name; }
size_t st_dtype_size(StDType t) { return info(t).size; }
DType st_dtype_target(StDType t) { return info(t).target; }

namespace {

// ---------------------------------------------------------------- file helpers

std::string errno_str() { return std::strerror(errno); }

std::string json_brief(const ojson& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// Multiplies with overflow detection.
bool mul_overflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

// ---------------------------------------------------------------- checksums (see core/serialize.h)

constexpr const char* kChecksumAlgorithm = "xxh3_64";
// How the writer's value starts. Another metadata value starting so is refused: by the reader (a damaged key
// must not make a checked file look unchecked) and by the writer (so that the reader never mistakes it).
constexpr const char* kChecksumsPrefix = "{\"algorithm\":\"xxh3_64\",";

std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

bool parse_hex64(const std::string& s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | uint64_t(d);
  }
  *out = v;
  return true;
}

// A streaming digest of one tensor: its descriptor first, then its stored bytes.
struct TensorHash {
  XXH3_state_t* st = XXH3_createState();
  TensorHash(StDType dtype, const Shape& shape) {
    LD_CHECK(st != nullptr, "safetensors: out of memory for a checksum state");
    XXH3_64bits_reset(st);
    std::string d = std::string(st_dtype_name(dtype)) + "[";
    for (size_t i = 0; i < shape.size(); ++i) {
      if (i) d += ',';
      d += std::to_string(shape[i]);
    }
    d += "]";
    XXH3_64bits_update(st, d.data(), d.size());
  }
  ~TensorHash() { XXH3_freeState(st); }
  TensorHash(const TensorHash&) = delete;
  TensorHash& operator=(const TensorHash&) = delete;
  void update(const void* p, size_t n) { XXH3_64bits_update(st, p, n); }
  uint64_t digest() const { return XXH3_64bits_digest(st); }
};

uint64_t metadata_digest(const Metadata& m) {
  XXH3_state_t* st = XXH3_createState();
  LD_CHECK(st != nullptr, "safetensors: out of memory for a checksum state");
  XXH3_64bits_reset(st);
  auto put = [&](const std::string& s) {
    uint64_t n = s.size();
    XXH3_64bits_update(st, &n, 8);
    XXH3_64bits_update(st, s.data(), s.size());
  };
  for (auto& [k, v] : m)
    if (k != kChecksumsKey) {
      put(k);
      put(v);
    }
  uint64_t d = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return d;
}

const char* file_type(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a plain file";
}

}  // namespace

// ---------------------------------------------------------------- reader

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  auto fail = [&](const auto&... args) {
    LD_FAIL("safetensors: ", path_, ": ", args...);
  };
  // stat first: opening a FIFO for reading would wait for a writer. O_NONBLOCK covers a path swapped for
  // a FIFO between the two calls (it does not affect reads of a regular file); fstat checks again.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("cannot open: ", errno_str());
  if (!S_ISREG(st.st_mode)) fail("not a regular file (", file_type(st.st_mode), ")");
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) fail("cannot open: ", errno_str());
  try {
    if (::fstat(fd_, &st) != 0) fail("cannot stat: ", errno_str());
    if (!S_ISREG(st.st_mode)) fail("not a regular file (", file_type(st.st_mode), ")");
    size_ = size_t(st.st_size);
    if (size_ < 8) fail("file is ", size_, " bytes, too short for the 8-byte header length");
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) fail("mmap failed: ", errno_str());
    map_ = static_cast<const unsigned char*>(m);

    uint64_t n = 0;
    std::memcpy(&n, map_, 8);
    if (n > uint64_t(size_) - 8)
      fail("header length ", n, " goes beyond the end of the file (", size_, " bytes; at most ", size_ - 8,
           " available) - truncated or not a safetensors file");
    constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit
    if (n > kMaxHeader) fail("header length ", n, " exceeds the ", kMaxHeader, "-byte limit");
    if (n < 2) fail("header length ", n, " is too short for a JSON object");
    const char* hdr = reinterpret_cast<const char*>(map_ + 8);
    buffer_ = map_ + 8 + n;
    buffer_size_ = uint64_t(size_) - 8 - n;
    // Exactly one JSON object, then only space padding. (A header length one too long takes in a data byte,
    // caught here; one too short leaves a byte before the buffer, caught by the tiling below.)
    uint64_t json_end = n;
    while (json_end > 0 && hdr[json_end - 1] == ' ') --json_end;

    // Parse, rejecting duplicate top-level keys (a JSON parser would silently keep one of them).
    std::set<std::string> seen;
    ojson header;
    try {
      header = ojson::parse(
          hdr, hdr + json_end,
          [&](int depth, ojson::parse_event_t ev, ojson& parsed) {
            if (ev == ojson::parse_event_t::key && depth == 1) {
              std::string k = parsed.get<std::string>();
              if (!seen.insert(k).second) fail("duplicate tensor name \"", k, "\" in the header");
            }
            return true;
          });
    } catch (const ojson::exception& e) {
      fail("header is not valid JSON (", e.what(), ") - the header length ", n, " is wrong, or the header is damaged");
    }
    if (!header.is_object()) fail("header is not a JSON object (got ", header.type_name(), ")");
    // JSON allows other whitespace around the object; the format allows only trailing spaces.
    if (hdr[0] != '{')
      fail("header must start with '{' (byte 8 of the file), got byte 0x", hex64(uint8_t(hdr[0])).substr(14));
    if (hdr[json_end - 1] != '}')
      fail("header length ", n, ": the header must end with '}' and optional space padding, but byte ", 8 + json_end - 1,
           " is 0x", hex64(uint8_t(hdr[json_end - 1])).substr(14), " - a wrong header length or trailing bytes in the header");
    std::string checksums_text;
    bool checksums_seen = false;

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const ojson& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail("\"__metadata__\" must be an object of strings, got ", v.type_name());
        for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
          if (!m2.value().is_string())
            fail("\"__metadata__\" entry \"", m2.key(), "\" must be a string, got ", m2.value().type_name());
          if (m2.key() == kChecksumsKey) {
            checksums_seen = true;
            checksums_text = m2.value().get<std::string>();
          } else if (m2.value().get<std::string>().rfind(kChecksumsPrefix, 0) == 0) {
            fail("\"__metadata__\" entry \"", m2.key(), "\" holds liandan checksums but is not named \"", kChecksumsKey,
                 "\": the key is damaged");
          } else {
            metadata_[m2.key()] = m2.value().get<std::string>();
          }
        }
        continue;
      }
      auto tfail = [&](const auto&... args) { fail("tensor \"", name, "\": ", args...); };
      if (!v.is_object()) tfail("entry must be an object, got ", v.type_name());
      Entry e;
      e.name = name;
      // dtype
      auto dt = v.find("dtype");
      if (dt == v.end()) tfail("missing field \"dtype\"");
      if (!dt->is_string()) tfail("field \"dtype\" must be a string, got ", dt->dump());
      std::string dts = dt->get<std::string>();
      bool found = false;
      for (auto& i : kStDTypes)
        if (dts == i.name) { e.dtype = i.t; found = true; }
      if (!found) {
        for (const char* u : kUnsupported)
          if (dts == u) tfail("field \"dtype\": dtype ", dts, " is not supported by liandan");
        tfail("field \"dtype\": unknown dtype \"", dts, "\"");
      }
      // shape
      auto sh = v.find("shape");
      if (sh == v.end()) tfail("missing field \"shape\"");
      if (!sh->is_array()) tfail("field \"shape\" must be an array of non-negative integers, got ", json_brief(*sh));
      uint64_t numel = 1;
      for (auto& d : *sh) {
        if (!d.is_number_unsigned())
          tfail("field \"shape\" must be an array of non-negative integers, got ", json_brief(*sh));
        uint64_t s = d.get<uint64_t>();
        if (s > uint64_t(std::numeric_limits<int64_t>::max()) || mul_overflow(numel, s, &numel))
          tfail("field \"shape\" ", json_brief(*sh), " has too many elements");
        e.shape.push_back(int64_t(s));
      }
      uint64_t nbytes = 0;
      if (numel > uint64_t(std::numeric_limits<int64_t>::max()) ||
          mul_overflow(numel, uint64_t(st_dtype_size(e.dtype)), &nbytes))
        tfail("field \"shape\" ", json_brief(*sh), " has too many elements");
      // data_offsets
      auto off = v.find("data_offsets");
      if (off == v.end()) tfail("missing field \"data_offsets\"");
      if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
          !(*off)[1].is_number_unsigned())
        tfail("field \"data_offsets\" must be [begin, end] with non-negative integers, got ", json_brief(*off));
      e.begin = (*off)[0].get<uint64_t>();
      e.end = (*off)[1].get<uint64_t>();
      if (e.begin > e.end) tfail("field \"data_offsets\" [", e.begin, ", ", e.end, "]: begin is after end");
      if (e.end > buffer_size_)
        tfail("field \"data_offsets\" [", e.begin, ", ", e.end, "] out of range: the data buffer has ", buffer_size_,
              " bytes (file truncated?)");
      if (e.end - e.begin != nbytes)
        tfail("shape ", shape_str(e.shape), " of ", dts, " needs ", nbytes, " bytes but \"data_offsets\" [", e.begin,
              ", ", e.end, "] hold ", e.end - e.begin);
      index_[name] = entries_.size();
      entries_.push_back(std::move(e));
    }

    // The tensors, sorted by offset, tile the buffer: each starts where the previous ended (an empty tensor
    // on a boundary), the first at 0, and the last ends at the end of the file.
    std::vector<const Entry*> byoff;
    for (auto& e : entries_) byoff.push_back(&e);
    std::stable_sort(byoff.begin(), byoff.end(), [](const Entry* a, const Entry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    uint64_t covered = 0;
    const Entry* prev = nullptr;
    for (const Entry* e : byoff) {
      if (e->begin < covered)
        fail("tensors \"", prev->name, "\" (bytes [", prev->begin, ", ", prev->end, ")) and \"", e->name,
             "\" (bytes [", e->begin, ", ", e->end, ")) overlap in field \"data_offsets\"");
      if (e->begin > covered)
        fail("tensor \"", e->name, "\": field \"data_offsets\" [", e->begin, ", ", e->end, "] leaves bytes [", covered,
             ", ", e->begin, ") of the data buffer unused (",
             prev ? "after tensor \"" + prev->name + "\"" : std::string("at its start"),
             "): tensors must be stored back to back");
      covered = e->end;
      prev = e;
    }
    if (covered != buffer_size_)
      fail("the data buffer holds ", buffer_size_, " bytes but the tensors' \"data_offsets\" end at ", covered,
           ": ", buffer_size_ - covered, " unaccounted byte(s) after ",
           prev ? "tensor \"" + prev->name + "\"" : std::string("the header"),
           " (trailing or inserted bytes, or a wrong header length ", n, ")");

    if (checksums_seen) parse_checksums(checksums_text);
  } catch (...) {
    if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
    ::close(fd_);
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

bool SafetensorsReader::contains(const std::string& name) const { return index_.count(name) != 0; }

const SafetensorsReader::Entry& SafetensorsReader::entry(const std::string& name) const {
  auto it = index_.find(name);
  LD_CHECK(it != index_.end(), "safetensors: ", path_, ": no tensor named \"", name, "\"");
  return entries_[it->second];
}

Tensor SafetensorsReader::read(const std::string& name) const { return read_entry(entry(name)); }

NamedTensors SafetensorsReader::read_all() const {
  NamedTensors out;
  out.reserve(entries_.size());
  for (auto& e : entries_) out.emplace_back(e.name, read_entry(e));
  return out;
}

namespace {

template <class Src, class Dst, class F>
void convert(const unsigned char* src, Dst* dst, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, src + size_t(i) * sizeof(Src), sizeof(Src));
    dst[i] = f(v);
  }
}

}  // namespace

void SafetensorsReader::parse_checksums(const std::string& text) {
  auto fail = [&](const auto&... args) {
    LD_FAIL("safetensors: ", path_, ": \"__metadata__\" entry \"", kChecksumsKey, "\": ", args...);
  };
  ojson j;
  try {
    j = ojson::parse(text);
  } catch (const ojson::exception& e) {
    fail("not valid JSON (", e.what(), ") - file damaged");
  }
  if (!j.is_object()) fail("must be a JSON object, got ", j.type_name());
  auto alg = j.find("algorithm");
  if (alg == j.end() || !alg->is_string()) fail("missing field \"algorithm\"");
  if (alg->get<std::string>() != kChecksumAlgorithm)
    fail("field \"algorithm\": unknown checksum algorithm \"", alg->get<std::string>(), "\" (this reader knows \"",
         kChecksumAlgorithm, "\")");
  auto hex_field = [&](const ojson& v, const std::string& what) {
    uint64_t d = 0;
    if (!v.is_string() || !parse_hex64(v.get<std::string>(), &d))
      fail(what, " must be 16 lowercase hex digits, got ", json_brief(v));
    return d;
  };
  auto md = j.find("metadata");
  if (md == j.end()) fail("missing field \"metadata\"");
  uint64_t want_md = hex_field(*md, "field \"metadata\"");
  uint64_t got_md = metadata_digest(metadata_);
  if (got_md != want_md) fail_checksum("the metadata", want_md, got_md);
  auto ts = j.find("tensors");
  if (ts == j.end() || !ts->is_object()) fail("field \"tensors\" must be an object of tensor names");
  checksums_.assign(entries_.size(), 0);
  std::vector<bool> given(entries_.size(), false);
  for (auto it = ts->begin(); it != ts->end(); ++it) {
    auto e = index_.find(it.key());
    if (e == index_.end()) fail("field \"tensors\" names tensor \"", it.key(), "\", which is not in the file");
    checksums_[e->second] = hex_field(it.value(), "field \"tensors\": \"" + it.key() + "\"");
    given[e->second] = true;
  }
  for (size_t i = 0; i < entries_.size(); ++i)
    if (!given[i]) fail("field \"tensors\" has no checksum for tensor \"", entries_[i].name, "\"");
  has_checksums_ = true;
}

void SafetensorsReader::fail_checksum(const std::string& what, uint64_t stored, uint64_t computed) const {
  LD_FAIL("safetensors: ", path_, ": ", what, " fails its ", kChecksumAlgorithm, " checksum (stored ", hex64(stored),
          ", computed ", hex64(computed), "): the file is damaged");
}

Tensor SafetensorsReader::read_entry(const Entry& e) const {
  const unsigned char* src = buffer_ + e.begin;
  const size_t nbytes = e.end - e.begin;
  bool raw = e.dtype == StDType::F32 || e.dtype == StDType::F64 || e.dtype == StDType::I64;
  std::optional<TensorHash> h;
  if (has_checksums_) h.emplace(e.dtype, e.shape);
  if (h && !raw) h->update(src, nbytes);
  auto verify = [&] {
    if (!h) return;
    uint64_t want = checksums_[size_t(&e - entries_.data())];  // e is one of entries_
    if (h->digest() != want) fail_checksum("tensor \"" + e.name + "\"", want, h->digest());
  };
  Tensor t = empty(e.shape, st_dtype_target(e.dtype));
  int64_t n = t.numel();
  if (n == 0) {
    verify();  // its descriptor (dtype and shape) is still covered
    return t;
  }
  switch (e.dtype) {
    case StDType::F32:
    case StDType::F64:
    case StDType::I64: {
      // Hash and copy a chunk at a time: the copy reads what the hash just brought into the cache.
      constexpr size_t kChunk = size_t(1) << 18;
      auto* dst = static_cast<unsigned char*>(t.raw_data());
      for (size_t off = 0; off < nbytes; off += kChunk) {
        size_t len = std::min(kChunk, nbytes - off);
        if (h) h->update(src + off, len);
        std::memcpy(dst + off, src + off, len);
      }
      break;
    }
    case StDType::BF16:
      convert<uint16_t>(src, t.data_ptr<float>(), n, [](uint16_t h) { return bf16_to_float(h); });
      break;
    case StDType::F16:
      convert<uint16_t>(src, t.data_ptr<float>(), n, [](uint16_t h) { return f16_to_float(h); });
      break;
    case StDType::I32: convert<int32_t>(src, t.data_ptr<int64_t>(), n, [](int32_t v) { return int64_t(v); }); break;
    case StDType::I16: convert<int16_t>(src, t.data_ptr<int64_t>(), n, [](int16_t v) { return int64_t(v); }); break;
    case StDType::I8: convert<int8_t>(src, t.data_ptr<int64_t>(), n, [](int8_t v) { return int64_t(v); }); break;
    case StDType::U32: convert<uint32_t>(src, t.data_ptr<int64_t>(), n, [](uint32_t v) { return int64_t(v); }); break;
    case StDType::U16: convert<uint16_t>(src, t.data_ptr<int64_t>(), n, [](uint16_t v) { return int64_t(v); }); break;
    case StDType::U8: convert<uint8_t>(src, t.data_ptr<int64_t>(), n, [](uint8_t v) { return int64_t(v); }); break;
    case StDType::BOOL:
      convert<uint8_t>(src, t.data_ptr<int64_t>(), n, [](uint8_t v) { return int64_t(v != 0); });
      break;
  }
  verify();
  return t;
}

const Tensor& SafetensorsContents::at(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  LD_FAIL("safetensors: ", path, ": no tensor named \"", name, "\"");
}

SafetensorsContents load_safetensors(const std::string& path) {
  SafetensorsReader r(path);
  SafetensorsContents c;
  c.tensors = r.read_all();
  c.metadata = r.metadata();
  c.path = path;
  return c;
}

// ---------------------------------------------------------------- writer

namespace {

// Writes all of `n` bytes or throws.
void write_all(int fd, const void* p, size_t n, const std::string& tmp) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      LD_FAIL("safetensors: writing ", tmp, " failed: ", errno_str());
    }
    c += w;
    n -= size_t(w);
  }
}

StDType storage_type(const Tensor& t, FloatFormat ff) {
  switch (t.dtype()) {
    case DType::i64: return StDType::I64;
    case DType::f32:
    case DType::f64:
      if (ff == FloatFormat::bf16) return StDType::BF16;
      if (ff == FloatFormat::f16) return StDType::F16;
      return t.dtype() == DType::f32 ? StDType::F32 : StDType::F64;
    case DType::bf16: return ff == FloatFormat::f16 ? StDType::F16 : StDType::BF16;
    case DType::f16: return ff == FloatFormat::bf16 ? StDType::BF16 : StDType::F16;
  }
  return StDType::F32;
}

// Appends the bytes of `t` (contiguous) stored as `st` to the file, converting in chunks; `h` digests
// exactly the bytes written.
void write_tensor(int fd, const Tensor& t, StDType st, const std::string& tmp, TensorHash& h) {
  int64_t n = t.numel();
  if (n == 0) return;
  auto emit = [&](const void* p, size_t bytes) {
    h.update(p, bytes);
    write_all(fd, p, bytes, tmp);
  };
  bool half_st = st == StDType::BF16 || st == StDType::F16;
  bool same_half = (st == StDType::BF16 && t.dtype() == DType::bf16) || (st == StDType::F16 && t.dtype() == DType::f16);
  if (is_half(t.dtype()) && !same_half) return write_tensor(fd, t.to(DType::f32), st, tmp, h);  // bf16 <-> f16: exact via f32
  if (same_half || (st_dtype_size(st) == dtype_size(t.dtype()) && !half_st)) {
    emit(t.raw_data(), size_t(n) * dtype_size(t.dtype()));
    return;
  }
  constexpr int64_t kChunk = 1 << 18;
  std::vector<uint16_t> buf(size_t(std::min(n, kChunk)));
  auto conv = st == StDType::BF16 ? float_to_bf16 : float_to_f16;
  for (int64_t s = 0; s < n; s += kChunk) {
    int64_t e = std::min(n, s + kChunk);
    if (t.dtype() == DType::f32) {
      const float* p = t.data_ptr<float>();
      for (int64_t i = s; i < e; ++i) buf[size_t(i - s)] = conv(p[i]);
    } else {
      const double* p = t.data_ptr<double>();
      for (int64_t i = s; i < e; ++i) buf[size_t(i - s)] = conv(double_to_float_odd(p[i]));
    }
    emit(buf.data(), size_t(e - s) * 2);
  }
}

// The header text: JSON padded with spaces to a multiple of 8 bytes, which keeps the data 8-byte aligned
// as the reference writer does.
std::string header_text(const ojson& header, const std::string& path) {
  std::string hdr;
  try {
    hdr = header.dump();
  } catch (const ojson::exception& e) {  // e.g. a name or metadata value that is not valid UTF-8
    LD_FAIL("save_safetensors: ", path, ": cannot encode the header: ", e.what());
  }
  hdr.append((8 - hdr.size() % 8) % 8, ' ');
  return hdr;
}

// The "liandan.checksums" value for these digests (one per tensor, in order).
std::string checksums_text(const NamedTensors& tensors, const std::vector<uint64_t>& digests, uint64_t md) {
  ojson c = ojson::object();
  c["algorithm"] = kChecksumAlgorithm;
  c["metadata"] = hex64(md);
  ojson ts = ojson::object();
  for (size_t i = 0; i < tensors.size(); ++i) ts[tensors[i].first] = hex64(digests[i]);
  c["tensors"] = ts;
  return c.dump();
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata,
                      SaveOptions opt) {
  // Validate everything before touching the disk, so an invalid list leaves the old file alone.
  std::set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    LD_CHECK(!name.empty(), "save_safetensors: ", path, ": tensor #", i, " has an empty name");
    LD_CHECK(name != "__metadata__", "save_safetensors: ", path, ": \"__metadata__\" is reserved, not a tensor name");
    LD_CHECK(names.insert(name).second, "save_safetensors: ", path, ": duplicate tensor name \"", name, "\"");
    LD_CHECK(t.defined(), "save_safetensors: ", path, ": tensor \"", name, "\" is undefined");
  }
  for (auto& [k, v] : metadata)
    LD_CHECK(k == kChecksumsKey || v.rfind(kChecksumsPrefix, 0) != 0, "save_safetensors: ", path, ": metadata entry \"",
             k, "\": a value starting ", kChecksumsPrefix, " is reserved for the checksums");

  // With checksums, the header is written first with zero digests and rewritten in place once the data has
  // been hashed on its way out: the digests have a fixed width, so the header keeps its length.
  std::vector<uint64_t> digests(tensors.size(), 0);
  uint64_t md_digest = metadata_digest(metadata);
  ojson header = ojson::object();
  if (!metadata.empty() || opt.checksums) {
    ojson m = ojson::object();
    for (auto& [k, v] : metadata)
      if (k != kChecksumsKey) m[k] = v;
    if (opt.checksums) m[kChecksumsKey] = checksums_text(tensors, digests, md_digest);
    if (!m.empty()) header["__metadata__"] = m;
  }
  std::vector<StDType> types;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    StDType st = storage_type(t, opt.float_format);
    types.push_back(st);
    uint64_t nbytes = uint64_t(t.numel()) * st_dtype_size(st);
    ojson e = ojson::object();
    e["dtype"] = st_dtype_name(st);
    ojson shape = ojson::array();
    for (int64_t s : t.shape()) shape.push_back(s);
    e["shape"] = shape;
    e["data_offsets"] = ojson::array({offset, offset + nbytes});
    header[name] = e;
    offset += nbytes;
  }
  std::string hdr = header_text(header, path);

  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LD_CHECK(fd >= 0, "save_safetensors: cannot create ", tmp, ": ", errno_str());
  try {
    uint64_t n = hdr.size();
    write_all(fd, &n, 8, tmp);
    write_all(fd, hdr.data(), hdr.size(), tmp);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const Tensor& t = tensors[i].second;
      // Device tensors are written from a host copy (a checkpoint of a GPU run loads anywhere).
      Tensor c = !t.device().is_cpu() ? t.detach().to(Device::cpu()) : t.is_contiguous() ? t : t.detach().contiguous();
      TensorHash h(types[i], t.shape());
      write_tensor(fd, c, types[i], tmp, h);
      digests[i] = h.digest();
      if (i == tensors.size() / 2) fault_point("checkpoint");  // the kill tests: a writer killed halfway
    }
    if (opt.checksums) {
      header["__metadata__"][kChecksumsKey] = checksums_text(tensors, digests, md_digest);
      std::string final_hdr = header_text(header, path);
      LD_CHECK(final_hdr.size() == hdr.size(), "save_safetensors: ", path, ": internal error: the header changed length");
      ssize_t w = ::pwrite(fd, final_hdr.data(), final_hdr.size(), 8);
      LD_CHECK(w == ssize_t(final_hdr.size()), "save_safetensors: writing ", tmp, " failed: ",
               w < 0 ? errno_str() : std::string("short write"));
    }
    LD_CHECK(::fsync(fd) == 0, "save_safetensors: fsync of ", tmp, " failed: ", errno_str());
    int rc = ::close(fd);
    fd = -1;
    LD_CHECK(rc == 0, "save_safetensors: closing ", tmp, " failed: ", errno_str());
    LD_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "save_safetensors: cannot rename ", tmp, " to ", path, ": ",
             errno_str());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename durable. A failure here leaves a complete file in place, so it is not an error.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace liandan
