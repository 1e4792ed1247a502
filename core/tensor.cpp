#include "core/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/cpu/loops.h"
#include "core/ops.h"

namespace liandan {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  LD_CHECK(dev.is_cpu(), "storage: device ", dev.str(), " is not available in this build");
  data = cpu_alloc(nbytes);
}
Storage::~Storage() { cpu_free(data, bytes); }

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
  impl->storage = std::make_shared<Storage>(size_t(n) * dtype_size(opt.dtype));
  impl->dtype = opt.dtype;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->requires_grad = opt.requires_grad;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, TensorOptions opt) {
  Tensor t = empty(shape, opt.dtype);
  t.fill_(value);
  return t.requires_grad_(opt.requires_grad);
}
Tensor zeros(const Shape& shape, TensorOptions opt) { return full(shape, 0.0, opt); }
Tensor ones(const Shape& shape, TensorOptions opt) { return full(shape, 1.0, opt); }
Tensor scalar_tensor(double value, TensorOptions opt) { return full({}, value, opt); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype()); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype()); }

Tensor arange(double start, double end, double step, TensorOptions opt) {
  LD_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end), "arange: bad range (", start,
           ", ", end, ", step ", step, ")");
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((end - start) / step)));
  Tensor t = empty({n}, opt.dtype);
  LD_DISPATCH_ALL(opt.dtype, "arange", [&] {
    scalar_t* p = t.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = scalar_t(start + double(i) * step);
  });
  return t.requires_grad_(opt.requires_grad);
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
  return t.requires_grad_(opt.requires_grad);
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
  return t.requires_grad_(opt.requires_grad);
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
  return LD_DISPATCH_ALL(t.dtype(), "at", [&] {
    return double(static_cast<const scalar_t*>(t.impl()->storage->data)[off]);
  });
}

double Tensor::at(const Shape& index) const { return read_at(*this, element_offset(*this, index, "at")); }

void Tensor::set(const Shape& index, double v) const {
  int64_t off = element_offset(*this, index, "set");
  LD_DISPATCH_ALL(dtype(), "set", [&] { static_cast<scalar_t*>(impl_->storage->data)[off] = scalar_t(v); });
  bump_version();
}

double Tensor::item() const {
  LD_CHECK(defined() && numel() == 1, "item: expected a tensor with one element, got shape ",
           defined() ? shape_str(shape()) : "(undefined)");
  return read_at(*this, offset());
}

std::vector<double> Tensor::to_vector() const {
  Tensor c = contiguous();
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
  Shape st = broadcast_strides(src, dst.shape(), op);
  LD_DISPATCH_ALL(dst.dtype(), op, [&] {
    using D = scalar_t;
    LD_DISPATCH_ALL(src.dtype(), op, [&] { strided_copy<D, scalar_t>(dst, src, st); });
  });
}

}  // namespace

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype());
  copy_into(out, *this, "contiguous");
  record("contiguous", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype());
  copy_into(out, *this, "clone");
  record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t);
  copy_into(out, *this, "to");
  if (is_floating(t) && is_floating(dtype())) {
    DType orig = dtype();
    record("to", out, {*this}, [orig](const Tensor& g) { return std::vector<Tensor>{g.to(orig)}; });
  }
  return out;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>(*impl_);
  impl->requires_grad = false;
  impl->grad = nullptr;
  impl->grad_fn = nullptr;
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
  copy_into(*this, src, "copy_");
  bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_inplace(*this, "add_");
  LD_CHECK(other.dtype() == dtype(), "add_: dtype mismatch ", dtype_name(dtype()), " vs ", dtype_name(other.dtype()));
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
