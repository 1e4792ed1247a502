// Indexing ops with i64 indices. Every index is range-checked (an error names the op, the value
// and the valid range). Scatters are parallel over positions that cannot collide and sequential
// along the scattered dim, so they are deterministic — on the CPU and on a device (core/cuda/index.cu).
#include "core/cpu/loops.h"
#include "core/device.h"
#include "core/ops.h"

namespace liandan {

namespace {

void check_index_tensor(const Tensor& idx, const char* op) {
  LD_CHECK(idx.defined() && idx.dtype() == DType::i64, op, ": indices must be an i64 tensor, got ",
           idx.defined() ? dtype_name(idx.dtype()) : "undefined");
}

// Indices on a device are checked from a host copy, which is returned: an out-of-range index must be an
// error, never a read outside a device buffer.
Tensor check_range(const Tensor& idx_c, int64_t n, const char* op) {
  Tensor h = idx_c.device().is_cpu() ? idx_c : idx_c.to(Device::cpu());
  const int64_t* p = h.data_ptr<int64_t>();
  for (int64_t i = 0; i < h.numel(); ++i)
    LD_CHECK(p[i] >= 0 && p[i] < n, op, ": index ", p[i], " out of range [0, ", n, ")");
  return h;
}

// For the positions of `shape` around `dim`: offset (in a tensor with `strides`) of the
// coordinates given by row `o` (dims before `dim`) and column `j` (dims after), sizes from `shape`.
int64_t outer_inner_offset(const Shape& shape, const Shape& strides, int64_t dim, int64_t o, int64_t j) {
  int64_t off = 0;
  for (int64_t d = int64_t(shape.size()) - 1; d > dim; --d) {
    off += (j % shape[d]) * strides[d];
    j /= shape[d];
  }
  for (int64_t d = dim - 1; d >= 0; --d) {
    off += (o % shape[d]) * strides[d];
    o /= shape[d];
  }
  return off;
}

// dst[.., idx[.., k, ..], ..] (op)= src[.., k, ..] along dim (scatter) or
// dst[.., k, ..] = src[.., idx[.., k, ..], ..] (gather). `idx` has `shape`; dst/src are indexed with
// their own strides at the same outer/inner coordinates.
template <class T, bool Gather>
void scatter_gather_kernel(const Tensor& idx, const Tensor& src, const Tensor& dst, int64_t dim) {
  const Shape& s = idx.shape();
  int64_t outer = 1, K = s.empty() ? 1 : s[dim], inner = 1;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) (d < dim ? outer : d > dim ? inner : K) *= d == dim ? 1 : s[d];
  const int64_t* pi = idx.data_ptr<int64_t>();
  src.check_cpu("index");
  dst.check_cpu("index");
  const T* ps = static_cast<const T*>(src.impl()->storage->data) + src.offset();
  T* pd = static_cast<T*>(dst.impl()->storage->data) + dst.offset();
  Shape is = contiguous_strides(s);
  int64_t sd = src.dim() ? src.strides()[dim] : 0, dd = dst.dim() ? dst.strides()[dim] : 0;
  cpu::parallel_range(outer * inner, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / inner, j = it % inner;
      int64_t io = outer_inner_offset(s, is, dim, o, j);
      int64_t so = outer_inner_offset(s, src.strides(), dim, o, j);
      int64_t dof = outer_inner_offset(s, dst.strides(), dim, o, j);
      int64_t ik = s.empty() ? 0 : is[dim];
      for (int64_t k = 0; k < K; ++k) {
        int64_t at = pi[io + k * ik];
        if constexpr (Gather) pd[dof + k * dd] = ps[so + at * sd];
        else pd[dof + at * dd] += ps[so + k * sd];
      }
    }
  }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, K)));
}

void check_gather_shapes(const Tensor& x, int64_t d, const Tensor& index, const Tensor* src, const char* op) {
  LD_CHECK(index.dim() == x.dim(), op, ": index has ", index.dim(), " dims, input ", shape_str(x.shape()),
           " has ", x.dim());
  for (int64_t k = 0; k < x.dim(); ++k) {
    LD_CHECK(k == d || index.shape()[k] <= x.shape()[k], op, ": index shape ", shape_str(index.shape()),
             " exceeds input shape ", shape_str(x.shape()), " at dim ", k);
    if (src) LD_CHECK(index.shape()[k] <= src->shape()[k], op, ": index shape ", shape_str(index.shape()),
                      " exceeds src shape ", shape_str(src->shape()), " at dim ", k);
  }
}

// index_select on a device: the rows gathered by a kernel; the backward adds each selected row's gradient rows
// in index order over segments sorted here on the host (a stable counting sort of the K indices).
// (icpu: the indices on the host)
Tensor index_select_device(const Tensor& x, const Tensor& xc, const Tensor& ic, const Tensor& icpu, int64_t outer,
                           int64_t n, int64_t inner, Tensor out) {
  device_backend(x.device()).index_select(xc, ic.to(x.device()), outer, n, inner, out);
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  record("index_select", out, {x}, [=](const Tensor& g) {
    const int64_t K = icpu.numel();
    const int64_t* pi = icpu.data_ptr<int64_t>();
    std::vector<int64_t> count(size_t(n) + 1, 0), order(static_cast<size_t>(K)), starts, rows;
    for (int64_t k = 0; k < K; ++k) ++count[size_t(pi[k]) + 1];
    for (int64_t r = 0; r < n; ++r) count[size_t(r) + 1] += count[size_t(r)];
    for (int64_t r = 0; r < n; ++r)
      if (count[size_t(r) + 1] > count[size_t(r)]) {
        rows.push_back(r);
        starts.push_back(count[size_t(r)]);
      }
    starts.push_back(K);
    std::vector<int64_t> next(count.begin(), count.end() - 1);
    for (int64_t k = 0; k < K; ++k) order[size_t(next[size_t(pi[k])]++)] = k;  // stable: k ascending per row
    Tensor dx = zeros(xs, {g.dtype(), g.device()});
    auto up = [&](const std::vector<int64_t>& v) { return from_vector(v, {int64_t(v.size())}).to(g.device()); };
    device_backend(g.device()).index_add_rows(g.contiguous(), up(order), up(starts), up(rows), outer, n, inner, dx);
    return std::vector<Tensor>{dx};
  });
  return out;
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index_tensor(index, "gather");
  int64_t d = wrap_dim(dim, x.dim(), "gather");
  check_gather_shapes(x, d, index, nullptr, "gather");
  Tensor ic = index.contiguous();
  check_range(ic, x.dim() ? x.shape()[d] : 1, "gather");
  Tensor out = empty(index.shape(), {x.dtype(), x.device()});
  if (!x.device().is_cpu())
    device_backend(x.device()).gather_scatter(true, ic.to(x.device()), x, out, d);
  else
    LD_DISPATCH_FLOAT(x.dtype(), "gather", [&] { scatter_gather_kernel<scalar_t, true>(ic, x, out, d); });
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    record("gather", out, {x}, [ic, d, xs](const Tensor& g) {
      return std::vector<Tensor>{scatter_add(zeros(xs, {g.dtype(), g.device()}), d, ic, g)};
    });
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index_tensor(index, "scatter_add");
  LD_CHECK(x.dtype() == src.dtype(), "scatter_add: dtype mismatch ", dtype_name(x.dtype()), " vs ",
           dtype_name(src.dtype()));
  int64_t d = wrap_dim(dim, x.dim(), "scatter_add");
  LD_CHECK(src.dim() == x.dim(), "scatter_add: src ", shape_str(src.shape()), " and input ", shape_str(x.shape()),
           " differ in rank");
  check_gather_shapes(x, d, index, &src, "scatter_add");
  Tensor ic = index.contiguous();
  check_range(ic, x.dim() ? x.shape()[d] : 1, "scatter_add");
  LD_CHECK(src.device() == x.device(), "scatter_add: src is on ", src.device().str(), ", input on ", x.device().str());
  Tensor out;
  {
    NoGradGuard ng;
    out = x.clone();
  }
  if (!x.device().is_cpu())
    device_backend(x.device()).gather_scatter(false, ic.to(x.device()), src, out, d);
  else
    LD_DISPATCH_FLOAT(x.dtype(), "scatter_add", [&] { scatter_gather_kernel<scalar_t, false>(ic, src, out, d); });
  if (needs_grad({&x, &src})) {
    bool gx = x.requires_grad(), gs = src.requires_grad();
    Shape ss = src.shape(), is = index.shape();
    record("scatter_add", out, {x, src}, [=](const Tensor& g) {
      Tensor dsrc;
      if (gs) {
        dsrc = gather(g, d, ic);
        if (is != ss) dsrc = pad(dsrc, [&] {  // src larger than index: zero gradient outside it
          std::vector<int64_t> p;
          for (int64_t k = int64_t(ss.size()) - 1; k >= 0; --k) { p.push_back(0); p.push_back(ss[k] - is[k]); }
          return p;
        }());
      }
      return std::vector<Tensor>{gx ? g : Tensor(), dsrc};
    });
  }
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index_tensor(index, "index_select");
  LD_CHECK(index.dim() <= 1, "index_select: index must be 0-D or 1-D, got ", shape_str(index.shape()));
  int64_t d = wrap_dim(dim, x.dim(), "index_select");
  Tensor ic = index.reshape({-1}).contiguous();
  int64_t n = x.dim() ? x.shape()[d] : 1;
  Tensor icpu = check_range(ic, n, "index_select");
  Tensor xc = x.contiguous();
  Shape os = x.shape();
  if (x.dim()) os[d] = ic.numel();
  Tensor out = empty(os, {x.dtype(), x.device()});
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < x.dim(); ++k) (k < d ? outer : k > d ? inner : outer) *= k == d ? 1 : x.shape()[k];
  int64_t K = ic.numel();
  if (!x.device().is_cpu()) return index_select_device(x, xc, ic, icpu, outer, n, inner, out);
  const int64_t* pi = ic.data_ptr<int64_t>();
  LD_DISPATCH_FLOAT(x.dtype(), "index_select", [&] {
    const scalar_t* px = xc.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    cpu::parallel_range(outer * K, [&](int64_t b, int64_t e) {
      for (int64_t it = b; it < e; ++it) {
        int64_t o = it / K, k = it % K;
        std::copy(px + (o * n + pi[k]) * inner, px + (o * n + pi[k] + 1) * inner, po + it * inner);
      }
    }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, inner)));
  });
  if (needs_grad({&x})) {
    Shape xs = x.shape();
    // The closure keeps `ic` alive: the caller's index tensor may be freed before backward runs.
    record("index_select", out, {x}, [=](const Tensor& g) {
      // index_add: scatter rows of g back, sequential over k per (outer, column) -> deterministic.
      const int64_t* pi = ic.data_ptr<int64_t>();
      Tensor gc = g.contiguous();
      Tensor dx = zeros(xs, g.dtype());
      LD_DISPATCH_FLOAT(g.dtype(), "index_select backward", [&] {
        const scalar_t* pg = gc.data_ptr<scalar_t>();
        scalar_t* pd = dx.data_ptr<scalar_t>();
        cpu::parallel_range(outer * inner, [&](int64_t b, int64_t e) {
          for (int64_t it = b; it < e; ++it) {
            int64_t o = it / inner, j = it % inner;
            for (int64_t k = 0; k < K; ++k) pd[(o * n + pi[k]) * inner + j] += pg[(o * K + k) * inner + j];
          }
        }, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, K)));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  LD_CHECK(weight.dim() == 2, "embedding: weight must be 2-D [num, dim], got ", shape_str(weight.shape()));
  check_index_tensor(indices, "embedding");
  check_range(indices.contiguous(), weight.shape()[0], "embedding");  // name embedding, not index_select
  Shape os = indices.shape();
  os.push_back(weight.shape()[1]);
  return index_select(weight, 0, indices.reshape({-1})).reshape(os);
}

}  // namespace liandan
