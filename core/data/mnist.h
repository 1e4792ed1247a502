#pragma once
// MNIST from the standard IDX files (yann.lecun.com/exdb/mnist; scripts/get-data fetches them).
//
// IDX layout: a 4-byte magic (0, 0, element type, number of dims), one big-endian u32 per dim, then the
// elements in row-major order. MNIST uses type 0x08 (u8): images are [N, 28, 28] (magic 0x00000803),
// labels [N] (magic 0x00000801). Files may be gzip-compressed (recognised by their content, inflated in
// memory with zlib), as they are downloaded. Every malformed file — bad magic, wrong dims, a size that disagrees with the header —
// is a liandan::Error naming the file and what is wrong.
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/loader.h"
#include "core/tensor.h"

namespace liandan::data {

// An IDX file of u8 elements.
struct IdxU8 {
  Shape dims;
  std::vector<uint8_t> data;  // prod(dims) bytes
};

IdxU8 read_idx_u8(const std::string& path);
// Writes `data` (prod(dims) bytes) as an IDX u8 file (used by tests and converters), gzipped when `path`
// ends in ".gz"; atomically.
void write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& data);

// [N, H, W] images as f32 in [0, 1] (byte / 255).
Tensor read_idx_images(const std::string& path);
// [N] labels as i64.
Tensor read_idx_labels(const std::string& path);

struct Mnist {
  Tensor images;  // f32 [N, 28, 28] in [0, 1]
  Tensor labels;  // i64 [N] in 0..9
};

// Reads DIR/{train,t10k}-images-idx3-ubyte and -labels-idx1-ubyte (or the same names + ".gz") and checks that they agree (same N,
// 28x28 images, labels 0..9). A missing file is an error that says to run scripts/get-data.
Mnist load_mnist(const std::string& dir, bool train);

// The split as a Dataset with fields "image" (f32 [B, 1, 28, 28]) and "label" (i64 [B]).
std::shared_ptr<TensorDataset> mnist_dataset(const Mnist& m);

}  // namespace liandan::data
