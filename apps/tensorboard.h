#pragma once
// TensorBoard event files (`[log] tensorboard = true`): RUN_DIR/tensorboard/events.out.tfevents.<time>.<host>,
// readable by TensorBoard and tf.data. The format is TFRecord framing around `Event` protocol buffers:
//   uint64 length | uint32 masked CRC32C(length) | Event bytes | uint32 masked CRC32C(Event bytes)
// (little endian; mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8). The few protobuf fields used are encoded by
// hand (wire types varint, 64-bit, length-delimited, 32-bit): Event{wall_time=1 double, step=2 int64,
// file_version=3 string, summary=5}, Summary{value=1 repeated}, Summary.Value{tag=1, simple_value=2 float,
// image=4}, Summary.Image{height=1, width=2, colorspace=3, encoded_image_string=4}. That keeps libprotobuf and
// a protoc step out of every build; tests/test_tensorboard.cpp checks the bytes with python3-protobuf and
// TensorFlow's own .proto definitions compiled by protoc, an independent reader.
#include <cstdint>
#include <string>


namespace liandan::apps {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);  // Castagnoli, as in the TFRecord format

class TensorBoardWriter {
 public:
  // Creates `dir` and a new events file in it (a resumed run adds a file; TensorBoard reads them all).
  explicit TensorBoardWriter(const std::string& dir);
  void add_scalar(const std::string& tag, double value, int64_t step);
  // An image already encoded as PNG (height, width, channels describe it for TensorBoard).
  void add_image(const std::string& tag, const std::string& png, int64_t height, int64_t width, int64_t channels,
                 int64_t step);
  const std::string& path() const { return path_; }

 private:
  void write_event(const std::string& event);
  std::string path_;
  int fd_ = -1;

 public:
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
};

}  // namespace liandan::apps
