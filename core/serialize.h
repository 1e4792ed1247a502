#pragma once
// safetensors (https://github.com/huggingface/safetensors) reader and writer.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// (padded with spaces to a multiple of 8), then the byte buffer; offsets are relative to the buffer.
//
// dtypes: liandan holds f32, f64 and i64. Reading converts F32 -> f32, F64 -> f64, BF16/F16 -> f32,
// I64/I32/I16/I8/U32/U16/U8/BOOL -> i64. Writing stores f32/f64/i64 as F32/F64/I64, or floating tensors as
// BF16/F16 (round to nearest even) when asked.
//
// Reading memory-maps the file and copies (or converts) each tensor out, so a reader can pick a few
// tensors of a large file. Every malformed file is a liandan::Error naming the file, the tensor and the
// field, never a crash. Writing is atomic: the data goes to `path.tmp.<pid>`, is flushed and fsync'ed, then
// renamed over `path` (and the directory is fsync'ed); on any error the old file is left untouched.
//
// Every byte is accounted for: the header must be exactly one JSON object starting at byte 8, followed by
// nothing but space padding; each tensor's data_offsets span exactly dtype size x numel bytes; the tensors'
// ranges, sorted, tile the buffer from 0 with no gap or overlap (an empty tensor sits on a boundary); and
// the last one ends exactly at the end of the file. (The reference implementation requires the same.) So a
// truncated file, trailing or inserted bytes, or a header length off by one is an error, not shifted weights.
// The path must be a regular file: a FIFO, a directory or a device is refused before it is opened, and it
// is opened non-blocking, so the reader never waits for a writer.
//
// Checksums. The writer stores, under the reserved metadata key "liandan.checksums", the compact JSON
//   {"algorithm":"xxh3_64","metadata":"<hex>","tensors":{"<name>":"<hex>",...}}
// where each <hex> is 16 lowercase hex digits of an XXH3_64bits digest (seed 0):
//   tensor:   over its descriptor "<DTYPE>[d0,d1,...]" (e.g. "F32[2,3]", a scalar "F32[]"), then its stored
//             bytes — so a flipped dtype letter or shape digit is caught as well as a flipped data byte;
//   metadata: over every other metadata entry in key order, each as u64-LE key length, key, u64-LE value
//             length, value.
// The reader checks the metadata digest when it opens the file and a tensor's digest each time it reads
// it, and a mismatch is an Error naming the file and the tensor ("fails its xxh3_64 checksum"). Files
// without the key (other tools: PyTorch, HF safetensors) load unverified; so that a damaged key cannot make
// a checked file look like one of those, another metadata value starting {"algorithm":"xxh3_64", is an
// Error (the writer refuses one too). The key is stripped from metadata() and SafetensorsContents::metadata,
// and a "liandan.checksums" entry passed to the writer is dropped (it computes its own), so metadata
// round-trips unchanged. Cost: XXH3 runs at ~18 GB/s here, a few ms per 100 MB on save and on load.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace liandan {

// An ordered list of named tensors (a state dict).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

// The element types of the safetensors format that liandan reads or writes.
enum class StDType { F64, F32, F16, BF16, I64, I32, I16, I8, U32, U16, U8, BOOL };
const char* st_dtype_name(StDType t);  // "F32", ...
size_t st_dtype_size(StDType t);
DType st_dtype_target(StDType t);  // the liandan dtype a tensor is read into

// How floating tensors are stored. `keep`: f32 as F32, f64 as F64. `bf16`/`f16`: both as BF16/F16.
enum class FloatFormat { keep, bf16, f16 };

struct SaveOptions {
  FloatFormat float_format = FloatFormat::keep;
  bool checksums = true;  // store "liandan.checksums" (above); false writes exactly what PyTorch would
};

// The reserved metadata key of the checksums.
inline constexpr const char* kChecksumsKey = "liandan.checksums";

// Writes `tensors` (in this order, names unique and non-empty, not "__metadata__") and `metadata`.
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {},
                      SaveOptions opt = {});

struct SafetensorsContents {
  NamedTensors tensors;  // in header order
  Metadata metadata;
  // Lookup by name; throws an Error naming the file when absent.
  const Tensor& at(const std::string& name) const;
  std::string path;
};

// Reads every tensor of the file.
SafetensorsContents load_safetensors(const std::string& path);

// A memory-mapped safetensors file whose header has been validated; tensors are copied out on demand.
class SafetensorsReader {
 public:
  struct Entry {
    std::string name;
    StDType dtype;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets into the buffer
  };

  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Entry>& entries() const { return entries_; }  // header order
  const Metadata& metadata() const { return metadata_; }  // without "liandan.checksums"
  bool has_checksums() const { return has_checksums_; }  // written by liandan with checksums
  bool contains(const std::string& name) const;
  const Entry& entry(const std::string& name) const;
  Tensor read(const std::string& name) const;  // a fresh contiguous tensor (converted as above)
  NamedTensors read_all() const;

 private:
  Tensor read_entry(const Entry& e) const;
  void parse_checksums(const std::string& text);
  [[noreturn]] void fail_checksum(const std::string& what, uint64_t stored, uint64_t computed) const;
  std::string path_;
  int fd_ = -1;
  const unsigned char* map_ = nullptr;
  size_t size_ = 0;
  const unsigned char* buffer_ = nullptr;  // start of the byte buffer
  uint64_t buffer_size_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  Metadata metadata_;
  bool has_checksums_ = false;
  std::vector<uint64_t> checksums_;  // per entry, when has_checksums_
};

// The scalar conversions the reader and writer use (float_to_bf16 etc.) are in core/half.h.

}  // namespace liandan
