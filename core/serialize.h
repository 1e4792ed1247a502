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
};

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
  const Metadata& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  const Entry& entry(const std::string& name) const;
  Tensor read(const std::string& name) const;  // a fresh contiguous tensor (converted as above)
  NamedTensors read_all() const;

 private:
  Tensor read_entry(const Entry& e) const;
  std::string path_;
  int fd_ = -1;
  const unsigned char* map_ = nullptr;
  size_t size_ = 0;
  const unsigned char* buffer_ = nullptr;  // start of the byte buffer
  uint64_t buffer_size_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  Metadata metadata_;
};

// The scalar conversions the reader and writer use (float_to_bf16 etc.) are in core/half.h.

}  // namespace liandan
