#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/device.h"
#include "core/cpu/loops.h"
#include "core/ops.h"
#include "core/ops/elementwise_kernels.h"

namespace liandan {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  data = dev.is_cpu() ? cpu_alloc(nbytes) : device_backend(dev).allocate(nbytes);
}
Storage::~Storage() {
  if (device.is_cpu()) cpu_free(data, bytes);
  else device_backend(device).deallocate(data, bytes);
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
    st[d] = s;
    s *= std::max<int64_t>(shape[d], 1);
  }
  return st;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    LD_CHECK(s >= 0, "shape ", shape_str(shape), ": negative size ", s);
    LD_CHECK(s == 0 || n <= std::numeric_limits<int64_t>::max() / 8 / s, "shape ", shape_str(shape),
             ": number of elements overflows");
    n *= s;
  }
  return n;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  int64_t n = std::max<int64_t>(ndim, 1);
  LD_CHECK(dim >= -n && dim < n, op, ": dim ", dim, " out of range for a tensor with ", ndim,
           " dims (expected -", n, " <= dim < ", n, ")");
  return dim < 0 ? dim + n : dim;
}

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape()) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to misplace (as torch)
  int64_t expect = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expect) return false;
    expect *= shape()[d];
  }
  return true;
}

// ---------------------------------------------------------------- creation

Tensor empty(const Shape& shape, TensorOptions opt) {
  int64_t n = shape_numel(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(n) * dtype_size(opt.dtype), opt.device);
  impl->dtype = opt.dtype;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->requires_grad = opt.requires_grad;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, TensorOptions opt) {
  Tensor t = empty(shape, {opt.dtype, opt.device});
  t.fill_(value);
  return t.requires_grad_(opt.requires_grad);
}
Tensor zeros(const Shape& shape, TensorOptions opt) { return full(shape, 0.0, opt); }
Tensor ones(const Shape& shape, TensorOptions opt) { return full(shape, 1.0, opt); }
Tensor scalar_tensor(double value, TensorOptions opt) { return full({}, value, opt); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {t.dtype(), t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {t.dtype(), t.device()}); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), {t.dtype(), t.device()}); }

// Creation functions that compute values on the CPU build them there and move them.
static Tensor on_device(Tensor t, const TensorOptions& opt) {
  if (!opt.device.is_cpu()) t = t.to(opt.device);
  return t.requires_grad_(opt.requires_grad);
}

Tensor arange(double start, double end, double step, TensorOptions opt) {
  LD_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end), "arange: bad range (", start,
           ", ", end, ", step ", step, ")");
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  Tensor t = empty({n}, opt.dtype);
  LD_DISPATCH_ALL(opt.dtype, "arange", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = scalar_t(start + double(i) * step);
  });
  return on_device(t, opt);
}
Tensor arange(int64_t end, TensorOptions opt) { return arange(0.0, double(end), 1.0, opt); }

Tensor linspace(double start, double end, int64_t steps, TensorOptions opt) {
  LD_CHECK(steps >= 0, "linspace: steps must be >= 0, got ", steps);
  Tensor t = empty({steps}, opt.dtype);
  double h = steps > 1 ? (end - start) / double(steps - 1) : 0.0;
  LD_DISPATCH_FLOAT(opt.dtype, "linspace", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    // Fill from both ends so the last value is exactly `end`, as torch does.
    for (int64_t i = 0; i < steps; ++i)
      p[i] = scalar_t(i < steps / 2 ? start + h * double(i) : end - h * double(steps - 1 - i));
  });
  return on_device(t, opt);
}

template <class V>
static Tensor from_values(const std::vector<V>& values, const Shape& shape, TensorOptions opt) {
  LD_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
           " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, opt.dtype);
  LD_DISPATCH_ALL(opt.dtype, "from_vector", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = scalar_t(values[i]);
  });
  return on_device(t, opt);
}
Tensor from_vector(const std::vector<double>& v, const Shape& s, TensorOptions o) { return from_values(v, s, o); }
Tensor from_vector(const std::vector<float>& v, const Shape& s, TensorOptions o) { return from_values(v, s, o); }
Tensor from_vector(const std::vector<int64_t>& v, const Shape& s) { return from_values(v, s, DType::i64); }

// ---------------------------------------------------------------- element access

static int64_t element_offset(const Tensor& t, const Shape& index, const char* op) {
  LD_CHECK(int64_t(index.size()) == t.dim(), op, ": index has ", index.size(),
           " entries for a tensor of shape ", shape_str(t.shape()));
  int64_t off = t.offset();
  for (int64_t d = 0; d < t.dim(); ++d) {
    int64_t i = index[d] < 0 ? index[d] + t.shape()[d] : index[d];
    LD_CHECK(i >= 0 && i < t.shape()[d], op, ": index ", index[d], " out of range for dim ", d,
             " of size ", t.shape()[d]);
    off += i * t.strides()[d];
  }
  return off;
}

static double read_at(const Tensor& t, int64_t off) {
  if (!t.device().is_cpu()) {  // one element back to the host
    double v = 0;
    LD_DISPATCH_ALL(t.dtype(), "at", [&] {
      scalar_t x;
      device_backend(t.device()).copy_to_host(&x, static_cast<const scalar_t*>(t.impl()->storage->data) + off,
                                               sizeof x);
      v = double(x);
    });
    return v;
  }
  return LD_DISPATCH_ALL(t.dtype(), "at", [&] {
    return double(static_cast<const scalar_t*>(t.impl()->storage->data)[off]);
  });
}

double Tensor::at(const Shape& index) const { return read_at(*this, element_offset(*this, index, "at")); }

void Tensor::set(const Shape& index, double v) const {
  int64_t off = element_offset(*this, index, "set");
  check_cpu("set");
  LD_DISPATCH_ALL(dtype(), "set", [&] { static_cast<scalar_t*>(impl_->storage->data)[off] = scalar_t(v); });
  bump_version();
}

double Tensor::item() const {
  LD_CHECK(defined() && numel() == 1, "item: expected a tensor with one element, got shape ",
           defined() ? shape_str(shape()) : "(undefined)");
  return read_at(*this, offset());
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = device().is_cpu() ? contiguous() : detach().to(Device::cpu());
  std::vector<double> v(size_t(c.numel()));
  LD_DISPATCH_ALL(dtype(), "to_vector", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    for (size_t i = 0; i < v.size(); ++i) v[i] = double(p[i]);
  });
  return v;
}

// ---------------------------------------------------------------- copies

namespace {

// dst[i] = src[i] over dst's shape, both strided; src already broadcast (stride 0 on expanded dims).
template <class D, class S>
void strided_copy(const Tensor& dst, const Tensor& src, const Shape& src_strides) {
  D* pd = static_cast<D*>(dst.impl()->storage->data) + dst.offset();
  const S* ps = static_cast<const S*>(src.impl()->storage->data) + src.offset();
  cpu::nd_for_each<2>(dst.shape(), {dst.strides().data(), src_strides.data()},
                      [&](std::array<int64_t, 2> off, std::array<int64_t, 2> st, int64_t n) {
    D* d = pd + off[0];
    const S* s = ps + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) d[i] = D(s[i]);
    } else if (st[0] == 1 && st[1] == 0) {
      D v = D(s[0]);
      for (int64_t i = 0; i < n; ++i) d[i] = v;
    } else {
      for (int64_t i = 0; i < n; ++i) d[i * st[0]] = D(s[i * st[1]]);
    }
  });
}

// Strides that read `src` as if broadcast to `shape` (0 on expanded dims).
Shape broadcast_strides(const Tensor& src, const Shape& shape, const char* op) {
  Shape st(shape.size(), 0);
  int64_t lead = int64_t(shape.size()) - src.dim();
  LD_CHECK(lead >= 0, op, ": cannot broadcast shape ", shape_str(src.shape()), " to ", shape_str(shape));
  for (int64_t d = 0; d < src.dim(); ++d) {
    int64_t s = src.shape()[d];
    LD_CHECK(s == shape[lead + d] || s == 1, op, ": cannot broadcast shape ", shape_str(src.shape()),
             " to ", shape_str(shape));
    st[lead + d] = s == 1 ? 0 : src.strides()[d];
  }
  return st;
}

void copy_into(const Tensor& dst, const Tensor& src, const char* op) {
  LD_CHECK(dst.device() == src.device(), op, ": device mismatch: ", dst.device().str(), " vs ", src.device().str());
  Shape st = broadcast_strides(src, dst.shape(), op);
  if (!dst.device().is_cpu()) return device_backend(dst.device()).copy_strided(dst, src, st);
  LD_DISPATCH_ALL(dst.dtype(), op, [&] {
    using D = scalar_t;
    LD_DISPATCH_ALL(src.dtype(), op, [&] { strided_copy<D, scalar_t>(dst, src, st); });
  });
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty_like(*this);
  copy_into(out, *this, "contiguous");
  record("contiguous", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty_like(*this);
  copy_into(out, *this, "clone");
  record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), {t, device()});
  copy_into(out, *this, "to");
  if (is_floating(t) && is_floating(dtype())) {
    DType orig = dtype();
    record("to", out, {*this}, [orig](const Tensor& g) { return std::vector<Tensor>{g.to(orig)}; });
  }
  return out;
}

// Between devices: a contiguous copy goes through the device's copy functions; the gradient goes back.
Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), {dtype(), d});
  size_t bytes = size_t(numel()) * dtype_size(dtype());
  if (bytes > 0) {
    if (d.is_cpu()) {
      device_backend(device()).copy_to_host(out.device_data(), src.device_data(), bytes);
    } else if (src.device().is_cpu()) {
      device_backend(d).copy_from_host(out.device_data(), src.device_data(), bytes);
    } else {  // device to device through the host: rare (multi-GPU), kept simple
      Tensor host = src.to(Device::cpu());
      device_backend(d).copy_from_host(out.device_data(), host.device_data(), bytes);
    }
  }
  Device from = device();
  record("to", out, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  return out;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->requires_grad = false;
  impl->grad = nullptr;
  impl->grad_fn = nullptr;
  impl->output_nr = 0;
  return Tensor(std::move(impl));
}

Tensor& Tensor::requires_grad_(bool on) {
  LD_CHECK(!on || is_floating(dtype()), "requires_grad_: only floating tensors can require grad, got ",
           dtype_name(dtype()));
  LD_CHECK(is_leaf() || on, "requires_grad_: cannot turn off requires_grad on a non-leaf tensor; use detach()");
  impl_->requires_grad = on;
  return *this;
}

void Tensor::backward(const Tensor& grad) const { run_backward(*this, grad); }

// ---------------------------------------------------------------- in-place

static void check_inplace(const Tensor& t, const char* op) {
  LD_CHECK(t.defined(), op, ": tensor is undefined");
  LD_CHECK(!(grad_mode_enabled() && t.requires_grad() && t.is_leaf()), op,
           ": a leaf tensor that requires grad is used in an in-place op; wrap the update in NoGradGuard");
  LD_CHECK(!(grad_mode_enabled() && t.requires_grad()), op,
           ": in-place ops on tensors that are part of an autograd graph are not supported");
}

Tensor& Tensor::fill_(double v) {
  check_inplace(*this, "fill_");
  if (!device().is_cpu()) {
    device_backend(device()).fill(*this, v);
    bump_version();
    return *this;
  }
  LD_DISPATCH_ALL(dtype(), "fill_", [&] {
    scalar_t val = scalar_t(v);
    scalar_t* base = static_cast<scalar_t*>(impl_->storage->data) + offset();
    if (is_contiguous()) {
      cpu::parallel_range(numel(), [&](int64_t b, int64_t e) { std::fill(base + b, base + e, val); });
    } else {
      cpu::nd_for_each<1>(shape(), {strides().data()}, [&](std::array<int64_t, 1> o, std::array<int64_t, 1> s, int64_t n) {
        for (int64_t i = 0; i < n; ++i) base[o[0] + i * s[0]] = val;
      });
    }
  });
  bump_version();
  return *this;
}

Tensor& Tensor::zero_() { return fill_(0.0); }

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  if (src.device() != device()) {  // across devices: move src first (no grad: this is an in-place write)
    NoGradGuard ng;
    return copy_(src.to(device()));
  }
  copy_into(*this, src, "copy_");
  bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_");
  LD_CHECK(other.dtype() == dtype(), "add_: dtype mismatch ", dtype_name(dtype()), " vs ", dtype_name(other.dtype()));
  if (!device().is_cpu()) {  // x + alpha * other by the device's binary kernel, written in place (x may be strided)
    NoGradGuard ng;
    Tensor o = alpha == 1.0 ? other : liandan::mul(other, alpha);
    broadcast_strides(o, shape(), "add_");  // o must broadcast to x's shape
    kernels::binary.labelled("add", "", device(), "add", *this, o, *this);
    bump_version();
    return *this;
  }
  Shape ost = broadcast_strides(other, shape(), "add_");
  LD_DISPATCH_FLOAT(dtype(), "add_", [&] {
    scalar_t* pd = static_cast<scalar_t*>(impl_->storage->data) + offset();
    const scalar_t* ps = static_cast<const scalar_t*>(other.impl()->storage->data) + other.offset();
    scalar_t a = scalar_t(alpha);
    cpu::nd_for_each<2>(shape(), {strides().data(), ost.data()},
                        [&](std::array<int64_t, 2> o, std::array<int64_t, 2> s, int64_t n) {
      scalar_t* d = pd + o[0];
      const scalar_t* x = ps + o[1];
      if (s[0] == 1 && s[1] == 1) for (int64_t i = 0; i < n; ++i) d[i] += a * x[i];
      else for (int64_t i = 0; i < n; ++i) d[i * s[0]] += a * x[i * s[1]];
    });
  });
  bump_version();
  return *this;
}

Tensor& Tensor::mul_(double s) {
  check_inplace(*this, "mul_");
  LD_CHECK(is_contiguous(), "mul_: expected a contiguous tensor");
  if (!device().is_cpu()) {
    NoGradGuard ng;
    copy_into(*this, liandan::mul(*this, s), "mul_");
    bump_version();
    return *this;
  }
  LD_DISPATCH_FLOAT(dtype(), "mul_", [&] {
    scalar_t* p = data_ptr<scalar_t>();
    scalar_t f = scalar_t(s);
    cpu::parallel_range(numel(), [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) p[i] *= f; });
  });
  bump_version();
  return *this;
}

// ---------------------------------------------------------------- method spellings
Tensor Tensor::sum() const { return liandan::sum(*this); }
Tensor Tensor::mean() const { return liandan::mean(*this); }
Tensor Tensor::exp() const { return liandan::exp(*this); }
Tensor Tensor::log() const { return liandan::log(*this); }
Tensor Tensor::pow(double e) const { return liandan::pow(*this, e); }
Tensor Tensor::matmul(const Tensor& o) const { return liandan::matmul(*this, o); }

// ---------------------------------------------------------------- printing

namespace {
void print_rec(std::ostream& os, const Tensor& t, int64_t dim, int64_t off, int indent) {
  int64_t n = t.shape()[dim];
  bool summarize = n > 8;
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == 3) {
      os << (dim + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - 3;
    }
    int64_t o = off + i * t.strides()[dim];
    if (dim + 1 == t.dim()) os << read_at(t, o);
    else print_rec(os, t, dim + 1, o, indent + 1);
    if (i + 1 < n) os << (dim + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << "]";
}
}  // namespace

std::string Tensor::str() const {
  std::ostringstream os;
  if (!defined()) return "tensor(undefined)";
  if (!device().is_cpu()) {  // printed from a host copy, with its device named
    std::string s = detach().to(Device::cpu()).str();
    return s.substr(0, s.size() - 1) + ", device=" + device().str() + ")";
  }
  os << std::setprecision(6) << "tensor(";
  if (dim() == 0) os << read_at(*this, offset());
  else if (numel() == 0) os << "[]";
  else print_rec(os, *this, 0, offset(), 7);
  os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype());
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace liandan
