#pragma once
// Tensor: a cheap, shared handle to (storage, dtype, shape, strides, offset) plus autograd state.
// Views (reshape, permute, narrow, expand, ...) share storage; `contiguous()` copies when needed.
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace liandan {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"

// Bytes shared by a tensor and all its views. `version` counts in-place writes so autograd can
// detect that a tensor it saved for backward was modified.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  std::atomic<uint64_t> version{0};
  explicit Storage(size_t nbytes, Device dev = Device::cpu());
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Node;  // autograd graph node (core/autograd.h)

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  DType dtype = DType::f32;
  Shape shape, strides;  // strides in elements
  int64_t offset = 0;    // in elements
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  int output_nr = 0;              // which output of grad_fn this is (multi-output ops)
};

struct TensorOptions {
  DType dtype = DType::f32;
  bool requires_grad = false;
  Device device = Device::cpu();
  TensorOptions() = default;
  TensorOptions(DType t) : dtype(t) {}  // NOLINT: `zeros({2}, DType::f64)` reads naturally
  TensorOptions(Device d) : device(d) {}  // NOLINT: `zeros({2}, Device::cuda())`
  TensorOptions(DType t, bool rg) : dtype(t), requires_grad(rg) {}
  TensorOptions(DType t, Device d) : dtype(t), device(d) {}
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- metadata
  const Shape& shape() const { return impl_->shape; }
  const Shape& strides() const { return impl_->strides; }
  int64_t dim() const { return int64_t(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t numel() const;
  int64_t offset() const { return impl_->offset; }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage->device; }
  bool is_contiguous() const;
  uint64_t version() const { return impl_->storage->version.load(); }
  void bump_version() const { impl_->storage->version++; }

  // ---- data access (CPU). A tensor on another device is refused: CPU code must never touch device memory.
  template <class T> T* data_ptr() const {
    LD_CHECK(dtype_of<T>::value == dtype(), "data_ptr: tensor has dtype ", dtype_name(dtype()),
             ", asked for ", dtype_name(dtype_of<T>::value));
    check_cpu("data_ptr");
    return static_cast<T*>(impl_->storage->data) + impl_->offset;
  }
  void* raw_data() const {
    check_cpu("raw_data");
    return device_data();
  }
  // The first element's address on whatever device holds it (for device kernels).
  void* device_data() const {
    return static_cast<char*>(impl_->storage->data) + impl_->offset * int64_t(dtype_size(dtype()));
  }
  void check_cpu(const char* op) const {
    LD_CHECK(device().is_cpu(), op, ": tensor of shape ", shape_str(shape()), " is on ", device().str(),
             "; this op runs on the CPU only so far (move it with .to(Device::cpu()))");
  }
  double item() const;                           // one-element tensors
  double at(const Shape& index) const;           // element access for tests (negative ok)
  void set(const Shape& index, double v) const;  // element write (bumps the version)
  std::vector<double> to_vector() const;         // all elements in logical (row-major) order

  // ---- autograd
  bool requires_grad() const { return impl_->requires_grad; }
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  Tensor grad() const { return Tensor(impl_->grad); }
  void set_grad(const Tensor& g) const { impl_->grad = g.impl_; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  // Backpropagates from this tensor; a scalar needs no `grad`, others need one of the same shape.
  void backward(const Tensor& grad = Tensor()) const;
  Tensor detach() const;  // shares storage, no history

  // ---- views (share storage) and copies
  Tensor view(const Shape& shape) const;     // requires compatible strides
  Tensor reshape(const Shape& shape) const;  // view when possible, else copy
  Tensor permute(const Shape& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // drops `dim`
  Tensor expand(const Shape& shape) const;          // -1 keeps a size
  Tensor squeeze(int64_t dim) const;
  Tensor squeeze() const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(DType t) const;
  Tensor to(Device d) const;  // differentiable: the gradient goes back to this tensor's device
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }

  // ---- in-place (bump the version; refused on leaves that require grad while grad mode is on)
  Tensor& zero_();
  Tensor& fill_(double v);
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double s);

  // ---- a few PyTorch-style method spellings of ops in core/ops.h
  Tensor sum() const;
  Tensor mean() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor pow(double e) const;
  Tensor matmul(const Tensor& o) const;

  std::string str() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- creation
Tensor empty(const Shape& shape, TensorOptions opt = {});
Tensor zeros(const Shape& shape, TensorOptions opt = {});
Tensor ones(const Shape& shape, TensorOptions opt = {});
Tensor full(const Shape& shape, double value, TensorOptions opt = {});
Tensor scalar_tensor(double value, TensorOptions opt = {});
Tensor arange(double start, double end, double step = 1.0, TensorOptions opt = {});
Tensor arange(int64_t end, TensorOptions opt = {});
Tensor linspace(double start, double end, int64_t steps, TensorOptions opt = {});
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions opt = {});
Tensor from_vector(const std::vector<float>& values, const Shape& shape, TensorOptions opt = {});
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor empty_like(const Tensor& t);  // the *_like functions keep t's dtype and device

// ---- helpers shared by ops
Shape contiguous_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);  // checked for overflow
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace liandan

namespace ld = liandan;
