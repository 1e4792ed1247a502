// TensorBoard event files, hand-encoded (apps/tensorboard.h says why and which fields).
#include "apps/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace liandan::apps {

namespace {

// CRC32C (reflected polynomial 0x82f63b78), one table lookup per byte: event files are small.
const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return t;
}

uint32_t masked_crc(const std::string& s) {
  uint32_t c = crc32c(s.data(), s.size());
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// Protocol-buffer wire format: a key is (field << 3) | wire type.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
template <class T>
void fixed(std::string& out, T v) {  // little-endian bytes of a double/float/uint (x86 and ARM are little endian)
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}
void field_varint(std::string& out, int field, uint64_t v) { varint(out, uint64_t(field) << 3 | 0), varint(out, v); }
void field_bytes(std::string& out, int field, const std::string& bytes) {
  varint(out, uint64_t(field) << 3 | 2);
  varint(out, bytes.size());
  out += bytes;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event{wall_time = 1, step = 2, <what>}: `what` is an already encoded field (file_version or summary).
std::string event(int64_t step, const std::string& what) {
  std::string e;
  varint(e, 1 << 3 | 1);
  fixed(e, now_s());
  field_varint(e, 2, uint64_t(step));
  return e + what;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  auto& t = crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(int64_t(now_s())) + "." + host + "." +
          std::to_string(::getpid());
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  LD_CHECK(fd_ >= 0, "cannot open ", path_, " for writing: ", std::strerror(errno));
  std::string v;
  field_bytes(v, 3, "brain.Event:2");  // the first record of every events file
  write_event(event(0, v));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string val;
  field_bytes(val, 1, tag);
  varint(val, 2 << 3 | 5);
  fixed(val, float(value));
  std::string summary;
  field_bytes(summary, 1, val);
  std::string what;
  field_bytes(what, 5, summary);
  write_event(event(step, what));
}

void TensorBoardWriter::add_image(const std::string& tag, const std::string& png, int64_t height, int64_t width,
                                  int64_t channels, int64_t step) {
  std::string img;
  field_varint(img, 1, uint64_t(height));
  field_varint(img, 2, uint64_t(width));
  field_varint(img, 3, uint64_t(channels));  // colorspace: 1 gray, 3 RGB, 4 RGBA
  field_bytes(img, 4, png);
  std::string val;
  field_bytes(val, 1, tag);
  field_bytes(val, 4, img);
  std::string summary;
  field_bytes(summary, 1, val);
  std::string what;
  field_bytes(what, 5, summary);
  write_event(event(step, what));
}

// One TFRecord, written with a single write(2) so that a reader never sees a record without its CRCs
// unless the process dies mid-write (TensorBoard then drops the truncated tail).
void TensorBoardWriter::write_event(const std::string& e) {
  std::string len, rec;
  fixed(len, uint64_t(e.size()));
  rec = len;
  fixed(rec, masked_crc(len));
  rec += e;
  fixed(rec, masked_crc(e));
  const char* p = rec.data();
  size_t n = rec.size();
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    LD_CHECK(w > 0, "cannot write ", path_, ": ", std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

}  // namespace liandan::apps
