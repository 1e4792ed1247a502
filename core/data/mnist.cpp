#include "core/data/mnist.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <zlib.h>

#include "core/fileio.h"

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

// A gzip stream (one or more members, as `gzip` writes them) inflated in memory. The output is capped so a
// corrupt or hostile length cannot exhaust memory: 16 GiB is far more than any IDX set.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path) {
  z_stream z{};
  LD_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "read_idx: ", path, ": zlib init failed");
  std::vector<uint8_t> out(std::max<size_t>(in.size() * 4, 1 << 16));
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = uInt(in.size());
  size_t have = 0;
  int rc = Z_OK;
  while (true) {
    if (have == out.size()) {
      LD_CHECK(out.size() < (size_t(1) << 34), "read_idx: ", path, ": decompresses to more than 16 GiB");
      out.resize(out.size() * 2);
    }
    z.next_out = out.data() + have;
    z.avail_out = uInt(std::min<size_t>(out.size() - have, 1u << 30));
    size_t before = z.avail_out;
    rc = inflate(&z, Z_NO_FLUSH);
    have += before - z.avail_out;
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      LD_CHECK(inflateReset(&z) == Z_OK, "read_idx: ", path, ": zlib reset failed");  // next gzip member
      continue;
    }
    if (rc != Z_OK) {
      std::string msg = z.msg ? z.msg : "error " + std::to_string(rc);
      inflateEnd(&z);
      LD_FAIL("read_idx: ", path, ": corrupt gzip data (", msg, ")");
    }
    if (z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      LD_FAIL("read_idx: ", path, ": truncated gzip data");
    }
  }
  inflateEnd(&z);
  out.resize(have);
  return out;
}

std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& in, const std::string& path) {
  z_stream z{};
  LD_CHECK(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK, "write_idx: ", path,
           ": zlib init failed");
  std::vector<uint8_t> out(deflateBound(&z, uLong(in.size())) + 32);
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = uInt(in.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  int rc = deflate(&z, Z_FINISH);
  deflateEnd(&z);
  LD_CHECK(rc == Z_STREAM_END, "write_idx: ", path, ": gzip failed");
  out.resize(out.size() - z.avail_out);
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

IdxU8 read_idx_u8(const std::string& path) {
  std::vector<uint8_t> b = read_file(path, "read_idx");
  LD_CHECK(b.size() >= 4, "read_idx: ", path, ": truncated: ", b.size(), " bytes, not even a 4-byte header");
  if (b[0] == 0x1f && b[1] == 0x8b) b = gunzip(b, path);  // recognised by content, whatever the name
  LD_CHECK(b.size() >= 4, "read_idx: ", path, ": truncated: ", b.size(), " bytes, not even a 4-byte header");
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
  header.insert(header.end(), data.begin(), data.end());
  if (ends_with(path, ".gz")) header = gzip_bytes(header, path);
  write_file_atomic(path, std::string(header.begin(), header.end()));
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
  // The files as downloaded (.gz) are read as well as decompressed ones.
  for (std::string* p : {&images_path, &labels_path})
    if (!std::filesystem::exists(*p) && std::filesystem::exists(*p + ".gz")) *p += ".gz";
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
