// Views (they share storage; their backward maps the gradient back to the base's shape) and the
// copying shape ops: cat, stack, pad; split and unbind (views with one node for all pieces).
#include <numeric>

#include "core/ops.h"

namespace liandan {

namespace {

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->dtype = base.dtype();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  return Tensor(std::move(impl));
}

// Replaces one -1 by the size that keeps numel; checks that numel matches.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Shape& from) {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      LD_CHECK(infer < 0, op, ": only one dimension can be -1, got ", shape_str(shape));
      infer = int64_t(i);
    } else {
      LD_CHECK(s[i] >= 0, op, ": invalid size ", s[i], " in ", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    LD_CHECK(known != 0 && numel % known == 0, op, ": shape ", shape_str(shape),
             " is invalid for input of shape ", shape_str(from));
    s[infer] = numel / known;
  }
  LD_CHECK(shape_numel(s) == numel, op, ": shape ", shape_str(shape), " is invalid for input of shape ",
           shape_str(from), " (", numel, " elements)");
  return s;
}

Tensor reshape_grad(const Tensor& g, const Shape& shape) { return g.reshape(shape); }

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape s = infer_shape(shape, numel(), "view", this->shape());
  LD_CHECK(is_contiguous(), "view: tensor of shape ", shape_str(this->shape()), " with strides ",
           shape_str(strides()), " is not contiguous; use reshape() (copies) or contiguous() first");
  Tensor out = make_view(*this, s, contiguous_strides(s), offset());
  Shape in_shape = this->shape();
  record("view", out, {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{reshape_grad(g, in_shape)}; });
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (is_contiguous()) return view(shape);
  return contiguous().view(shape);
}

Tensor Tensor::permute(const Shape& dims) const {
  LD_CHECK(int64_t(dims.size()) == dim(), "permute: got ", dims.size(), " dims for a tensor of shape ",
           shape_str(shape()));
  Shape s(dims.size()), st(dims.size()), inverse(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    LD_CHECK(!seen[d], "permute: dim ", d, " repeated in ", shape_str(dims));
    seen[d] = true;
    s[i] = shape()[d];
    st[i] = strides()[d];
    inverse[d] = int64_t(i);
  }
  Tensor out = make_view(*this, s, st, offset());
  record("permute", out, {*this}, [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  Shape p(static_cast<size_t>(dim()));
  std::iota(p.begin(), p.end(), int64_t(0));
  if (dim() == 0) return *this;
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
  int64_t d = wrap_dim(dim_, dim(), "slice");
  LD_CHECK(dim() > 0, "slice: cannot slice a 0-d tensor");
  LD_CHECK(step >= 1, "slice: step must be >= 1, got ", step);
  int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = make_view(*this, s, st, offset() + start * strides()[d]);
  Shape in_shape = shape();
  TensorOptions o{dtype(), device()};
  record("slice", out, {*this}, [=](const Tensor& g) {
    Tensor gx = zeros(in_shape, o);
    gx.slice(d, start, end, step).copy_(g);
    return std::vector<Tensor>{gx};
  });
  return out;
}

Tensor Tensor::narrow(int64_t dim_, int64_t start, int64_t length) const {
  int64_t d = wrap_dim(dim_, dim(), "narrow");
  LD_CHECK(dim() > 0, "narrow: cannot narrow a 0-d tensor");
  int64_t n = shape()[d];
  if (start < 0) start += n;
  LD_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
           ") out of bounds for dim ", d, " of size ", n, " (shape ", shape_str(shape()), ")");
  return slice(d, start, start + length);
}

Tensor Tensor::select(int64_t dim_, int64_t index) const {
  int64_t d = wrap_dim(dim_, dim(), "select");
  LD_CHECK(dim() > 0, "select: cannot select from a 0-d tensor");
  int64_t n = shape()[d];
  LD_CHECK(index >= -n && index < n, "select: index ", index, " out of range for dim ", d, " of size ", n);
  if (index < 0) index += n;
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& shape) const {
  LD_CHECK(int64_t(shape.size()) >= dim(), "expand: target ", shape_str(shape), " has fewer dims than ",
           shape_str(this->shape()));
  int64_t lead = int64_t(shape.size()) - dim();
  Shape s(shape.size()), st(shape.size(), 0);
  for (int64_t i = 0; i < int64_t(shape.size()); ++i) {
    int64_t src = i - lead;
    int64_t want = shape[i];
    if (src < 0) {
      LD_CHECK(want >= 0, "expand: size -1 not allowed for a new leading dim in ", shape_str(shape));
      s[i] = want;
      continue;
    }
    int64_t have = this->shape()[src];
    if (want == -1) want = have;
    LD_CHECK(want >= 0 && (have == want || have == 1), "expand: cannot expand shape ", shape_str(this->shape()), " to ",
             shape_str(shape), " (dim ", i, ": ", have, " vs ", want, ")");
    s[i] = want;
    st[i] = have == want ? strides()[src] : 0;
  }
  Tensor out = make_view(*this, s, st, offset());
  Shape in_shape = this->shape();
  record("expand", out, {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
  return out;
}

// Dropping size-1 dims is always a view (reshape would copy a non-contiguous tensor).
Tensor Tensor::squeeze(int64_t dim_) const {
  int64_t d = wrap_dim(dim_, dim(), "squeeze");
  if (dim() == 0 || shape()[d] != 1) return *this;
  Shape s = shape(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = make_view(*this, s, st, offset());
  record("squeeze", out, {*this}, [d](const Tensor& g) { return std::vector<Tensor>{g.unsqueeze(d)}; });
  return out;
}

Tensor Tensor::squeeze() const {
  Shape s, st;
  for (int64_t d = 0; d < dim(); ++d) {
    if (shape()[d] == 1) continue;
    s.push_back(shape()[d]);
    st.push_back(strides()[d]);
  }
  Tensor out = make_view(*this, s, st, offset());
  Shape in_shape = shape();
  record("squeeze", out, {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{reshape_grad(g, in_shape)}; });
  return out;
}

Tensor Tensor::unsqueeze(int64_t dim_) const {
  int64_t d = wrap_dim(dim_, dim() + 1, "unsqueeze");
  Shape s = shape(), st = strides();
  int64_t stride = d < dim() ? shape()[d] * strides()[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  Tensor out = make_view(*this, s, st, offset());
  record("unsqueeze", out, {*this}, [d](const Tensor& g) { return std::vector<Tensor>{g.squeeze(d)}; });
  return out;
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  int64_t s = wrap_dim(start, dim(), "flatten"), e = wrap_dim(end, dim(), "flatten");
  LD_CHECK(s <= e, "flatten: start dim ", start, " after end dim ", end);
  Shape out(shape().begin(), shape().begin() + s);
  int64_t n = 1;
  for (int64_t d = s; d <= e; ++d) n *= shape()[d];
  out.push_back(n);
  out.insert(out.end(), shape().begin() + e + 1, shape().end());
  return reshape(out);
}

// ---------------------------------------------------------------- cat / stack / split / pad

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  LD_CHECK(!xs.empty(), "cat: expected a non-empty list of tensors");
  const Tensor& x0 = xs[0];
  LD_CHECK(x0.dim() > 0, "cat: zero-dimensional tensors cannot be concatenated");
  int64_t d = wrap_dim(dim, x0.dim(), "cat");
  Shape out_shape = x0.shape();
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    LD_CHECK(x.dtype() == x0.dtype(), "cat: tensor ", i, " has dtype ", dtype_name(x.dtype()), ", tensor 0 has ",
             dtype_name(x0.dtype()));
    LD_CHECK(x.device() == x0.device(), "cat: tensor ", i, " is on ", x.device().str(), ", tensor 0 on ",
             x0.device().str());
    bool ok = x.dim() == x0.dim();
    for (int64_t k = 0; ok && k < x.dim(); ++k) ok = k == d || x.shape()[k] == x0.shape()[k];
    LD_CHECK(ok, "cat: tensor ", i, " has shape ", shape_str(x.shape()), ", incompatible with ",
             shape_str(x0.shape()), " along dim ", d);
    total += x.shape()[d];
  }
  out_shape[d] = total;
  Tensor out = empty(out_shape, {x0.dtype(), x0.device()});
  std::vector<int64_t> sizes;
  {
    NoGradGuard ng;
    int64_t at = 0;
    for (auto& x : xs) {
      out.narrow(d, at, x.shape()[d]).copy_(x);
      sizes.push_back(x.shape()[d]);
      at += x.shape()[d];
    }
  }
  record("cat", out, xs, [sizes, d](const Tensor& g) { return split(g, sizes, d); });
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  LD_CHECK(!xs.empty(), "stack: expected a non-empty list of tensors");
  int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> u;
  for (size_t i = 0; i < xs.size(); ++i) {
    LD_CHECK(xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ", shape_str(xs[i].shape()),
             ", tensor 0 has ", shape_str(xs[0].shape()));
    u.push_back(xs[i].unsqueeze(d));
  }
  return cat(u, d);
}

namespace {
// The gradients of split/unbind's pieces, a zero tensor for a piece that received none.
std::vector<Tensor> piece_grads(const std::vector<Tensor>& g, const std::vector<Shape>& shapes, TensorOptions o) {
  std::vector<Tensor> parts;
  for (size_t i = 0; i < g.size(); ++i) parts.push_back(g[i].defined() ? g[i] : zeros(shapes[i], o));
  return parts;
}
std::vector<Shape> shapes_of(const std::vector<Tensor>& xs) {
  std::vector<Shape> s;
  for (const Tensor& x : xs) s.push_back(x.shape());
  return s;
}
}  // namespace

// The pieces are views of x with one autograd node between them: their gradients come back as one
// concatenation (one copy), where a node per piece would zero-fill and add a full-size gradient each.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    LD_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  LD_CHECK(total == x.shape()[d], "split: sizes sum to ", total, " but dim ", d, " of shape ",
           shape_str(x.shape()), " has ", x.shape()[d]);
  std::vector<Tensor> out;
  {
    NoGradGuard ng;
    int64_t at = 0;
    for (int64_t s : sizes) {
      out.push_back(x.narrow(d, at, s));
      at += s;
    }
  }
  TensorOptions o{x.dtype(), x.device()};
  record_multi("split", out, {x}, [d, o, shapes = shapes_of(out)](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{cat(piece_grads(g, shapes, o), d)};
  });
  return out;
}

std::vector<Tensor> unbind(const Tensor& x, int64_t dim) {
  int64_t d = wrap_dim(dim, x.dim(), "unbind");
  std::vector<Tensor> out;
  {
    NoGradGuard ng;
    for (int64_t i = 0; i < x.shape()[d]; ++i) out.push_back(x.select(d, i));
  }
  if (out.empty()) return out;
  TensorOptions o{x.dtype(), x.device()};
  record_multi("unbind", out, {x}, [d, o, shapes = shapes_of(out)](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{stack(piece_grads(g, shapes, o), d)};
  });
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  LD_CHECK(split_size > 0, "split: split_size must be positive, got ", split_size);
  int64_t n = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += split_size) sizes.push_back(std::min(split_size, n - at));
  if (n == 0) sizes.push_back(0);  // as torch: an empty dim splits into one empty piece
  return split(x, sizes, dim);
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  LD_CHECK(pads.size() % 2 == 0 && int64_t(pads.size()) <= 2 * x.dim(), "pad: expected an even number of ",
           "pads, at most 2 per dim, got ", pads.size(), " for shape ", shape_str(x.shape()));
  Shape s = x.shape();
  for (size_t i = 0; i < pads.size(); ++i)
    LD_CHECK(pads[i] >= 0, "pad: negative padding ", pads[i], " is not supported");
  for (size_t p = 0; p < pads.size() / 2; ++p) s[x.dim() - 1 - int64_t(p)] += pads[2 * p] + pads[2 * p + 1];
  Tensor out = full(s, value, {x.dtype(), x.device()});
  auto interior = [pads](const Tensor& t, int64_t ndim, const Shape& inner) {
    Tensor v = t;
    for (size_t p = 0; p < pads.size() / 2; ++p) {
      int64_t d = ndim - 1 - int64_t(p);
      v = v.narrow(d, pads[2 * p], inner[d]);
    }
    return v;
  };
  {
    NoGradGuard ng;
    interior(out, x.dim(), x.shape()).copy_(x);
  }
  Shape in_shape = x.shape();
  int64_t nd = x.dim();
  record("pad", out, {x}, [interior, nd, in_shape](const Tensor& g) {
    return std::vector<Tensor>{interior(g, nd, in_shape)};
  });
  return out;
}

}  // namespace liandan
