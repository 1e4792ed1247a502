#include "core/data/mnist.h"

#include <cstring>
#include <filesystem>
#include <fstream>

namespace liandan::data {

namespace {

std::vector<uint8_t> read_file(const std::string& path, const char* op) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  LD_CHECK(f.good() && std::filesystem::is_regular_file(path), op, ": cannot open ", path);
  std::vector<uint8_t> bytes(size_t(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  LD_CHECK(f.good(), op, ": error reading ", path);
  return bytes;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

IdxU8 read_idx_u8(const std::string& path) {
  std::vector<uint8_t> b = read_file(path, "read_idx");
  LD_CHECK(b.size() >= 4, "read_idx: ", path, ": truncated: ", b.size(), " bytes, not even a 4-byte header");
  LD_CHECK(!(b[0] == 0x1f && b[1] == 0x8b), "read_idx: ", path,
           ": is gzip-compressed; decompress it first (scripts/get-data does)");
  LD_CHECK(b[0] == 0 && b[1] == 0, "read_idx: ", path, ": bad magic number 0x", std::hex, be32(b.data()),
           " (an IDX file starts with two zero bytes)");
  LD_CHECK(b[2] == 0x08, "read_idx: ", path, ": element type 0x", std::hex, int(b[2]),
           " is not u8 (0x08), the only type MNIST uses");
  size_t ndim = b[3], header = 4 + 4 * ndim;
  LD_CHECK(ndim >= 1, "read_idx: ", path, ": magic says 0 dims");
  LD_CHECK(b.size() >= header, "read_idx: ", path, ": truncated header: ", ndim, " dims need ", header,
           " bytes, file has ", b.size());
  IdxU8 out;
  uint64_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    uint32_t n = be32(b.data() + 4 + 4 * d);
    out.dims.push_back(int64_t(n));
    // Saturate instead of overflowing: a huge product is caught as "truncated" below.
    count = (n != 0 && count > (uint64_t(1) << 40) / n) ? (uint64_t(1) << 40) : count * n;
  }
  uint64_t have = b.size() - header;
  LD_CHECK(have >= count, "read_idx: ", path, ": truncated: header says ", shape_str(out.dims), " (", count,
           " bytes of data), file has ", have);
  LD_CHECK(have == count, "read_idx: ", path, ": ", have - count, " trailing bytes after the ",
           shape_str(out.dims), " data");
  out.data.assign(b.begin() + std::ptrdiff_t(header), b.end());
  return out;
}

void write_idx_u8(const std::string& path, const Shape& dims, const std::vector<uint8_t>& data) {
  LD_CHECK(!dims.empty() && dims.size() < 256, "write_idx: ", path, ": need 1 to 255 dims, got ", dims.size());
  LD_CHECK(int64_t(data.size()) == shape_numel(dims), "write_idx: ", path, ": ", data.size(),
           " bytes do not fill dims ", shape_str(dims));
  std::vector<uint8_t> header = {0, 0, 0x08, uint8_t(dims.size())};
  for (int64_t d : dims) {
    LD_CHECK(d >= 0 && d <= 0xffffffffll, "write_idx: ", path, ": dim ", d, " does not fit a u32");
    for (int s = 24; s >= 0; s -= 8) header.push_back(uint8_t(uint64_t(d) >> s));
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  LD_CHECK(f.good(), "write_idx: cannot create ", path);
  f.write(reinterpret_cast<const char*>(header.data()), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  LD_CHECK(f.good(), "write_idx: error writing ", path);
}

Tensor read_idx_images(const std::string& path) {
  IdxU8 idx = read_idx_u8(path);
  LD_CHECK(idx.dims.size() == 3, "read_idx_images: ", path, ": expected 3 dims [N, H, W], got ",
           shape_str(idx.dims));
  Tensor out = empty(idx.dims);
  float* p = out.data_ptr<float>();
  for (size_t i = 0; i < idx.data.size(); ++i) p[i] = float(idx.data[i]) * (1.0f / 255.0f);
  return out;
}

Tensor read_idx_labels(const std::string& path) {
  IdxU8 idx = read_idx_u8(path);
  LD_CHECK(idx.dims.size() == 1, "read_idx_labels: ", path, ": expected 1 dim [N], got ", shape_str(idx.dims));
  Tensor out = empty(idx.dims, DType::i64);
  int64_t* p = out.data_ptr<int64_t>();
  for (size_t i = 0; i < idx.data.size(); ++i) p[i] = idx.data[i];
  return out;
}

Mnist load_mnist(const std::string& dir, bool train) {
  std::string prefix = dir + "/" + (train ? "train" : "t10k");
  std::string images_path = prefix + "-images-idx3-ubyte", labels_path = prefix + "-labels-idx1-ubyte";
  for (const auto& p : {images_path, labels_path})
    LD_CHECK(std::filesystem::exists(p), "load_mnist: ", p, " not found; run scripts/get-data (it writes ",
             "data/mnist/)");
  Mnist m{read_idx_images(images_path), read_idx_labels(labels_path)};
  LD_CHECK(m.images.size(1) == 28 && m.images.size(2) == 28, "load_mnist: ", images_path,
           ": expected 28x28 images, got ", shape_str(m.images.shape()));
  LD_CHECK(m.images.size(0) == m.labels.size(0), "load_mnist: ", images_path, " has ", m.images.size(0),
           " images but ", labels_path, " has ", m.labels.size(0), " labels");
  const int64_t* l = m.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < m.labels.numel(); ++i)
    LD_CHECK(l[i] >= 0 && l[i] <= 9, "load_mnist: ", labels_path, ": label ", i, " is ", l[i], ", not a digit 0..9");
  return m;
}

std::shared_ptr<TensorDataset> mnist_dataset(const Mnist& m) {
  return std::make_shared<TensorDataset>(Batch{{{"image", m.images.unsqueeze(1)}, {"label", m.labels}}});
}

}  // namespace liandan::data
