#pragma once
// Element types. f32 is the default; f64 exists so gradients can be checked by finite
// differences; i64 holds indices (embedding, gather, argmax). bf16/f16 arrive with CUDA.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"

namespace liandan {

enum class DType : uint8_t { f32, f64, i64 };

inline size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 8; }
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i64: return "i64";
  }
  return "?";
}
inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64; }

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };

enum class DeviceType : uint8_t { CPU, CUDA };
struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

}  // namespace liandan

// Runs BODY with `scalar_t` bound to the C++ type of a floating dtype; other dtypes are an
// error naming the op.
#define LD_DISPATCH_FLOAT(DT, OPNAME, ...)                                              \
  [&] {                                                                                  \
    switch (DT) {                                                                        \
      case ::liandan::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }      \
      case ::liandan::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }     \
      default: LD_FAIL(OPNAME, ": expected a floating dtype (f32 or f64), got ",          \
                       ::liandan::dtype_name(DT));                                       \
    }                                                                                    \
  }()

#define LD_DISPATCH_ALL(DT, OPNAME, ...)                                                 \
  [&] {                                                                                  \
    switch (DT) {                                                                        \
      case ::liandan::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }      \
      case ::liandan::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }     \
      case ::liandan::DType::i64: { using scalar_t = int64_t; return __VA_ARGS__(); }    \
    }                                                                                    \
    LD_FAIL(OPNAME, ": unknown dtype");                                                  \
  }()
