#include "core/gradcheck.h"

#include <cmath>
#include <sstream>

#include "core/ops.h"

namespace liandan {

namespace {

// Storage offsets of every element of t, in logical row-major order.
std::vector<int64_t> element_offsets(const Tensor& t) {
  std::vector<int64_t> offs;
  offs.reserve(size_t(t.numel()));
  Shape idx(size_t(t.dim()), 0);
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t off = t.offset();
    for (int64_t d = 0; d < t.dim(); ++d) off += idx[d] * t.strides()[d];
    offs.push_back(off);
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.shape()[d]) break;
      idx[d] = 0;
    }
  }
  return offs;
}

double projected(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& xs,
                 const Tensor& r) {
  NoGradGuard ng;
  return sum(mul(f(xs), r)).item();
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt) {
  for (auto& x : inputs)
    LD_CHECK(!x.defined() || !x.requires_grad() || x.dtype() == DType::f64,
             "gradcheck: inputs that require grad must be f64, got ", dtype_name(x.dtype()));
  for (auto& x : inputs) if (x.defined()) x.set_grad(Tensor());

  Tensor out = f(inputs);
  Generator gen(opt.seed);
  Tensor r = randn(out.shape(), gen, DType::f64);
  sum(mul(out, r)).backward();

  GradcheckResult res;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor ga = x.grad().defined() ? x.grad() : zeros(x.shape(), DType::f64);
    std::vector<double> analytic = ga.to_vector();
    double* base = static_cast<double*>(x.impl()->storage->data);
    std::vector<int64_t> offs = element_offsets(x);
    for (size_t k = 0; k < offs.size(); ++k) {
      double orig = base[offs[k]];
      base[offs[k]] = orig + opt.eps;
      double lp = projected(f, inputs, r);
      base[offs[k]] = orig - opt.eps;
      double lm = projected(f, inputs, r);
      base[offs[k]] = orig;
      double numeric = (lp - lm) / (2 * opt.eps);
      double diff = std::fabs(analytic[k] - numeric);
      if (!(diff <= opt.atol + opt.rtol * std::fabs(numeric))) {
        std::ostringstream os;
        os << "gradcheck: input " << i << " (shape " << shape_str(x.shape()) << ") element " << k
           << ": analytic " << analytic[k] << " vs numeric " << numeric << " (diff " << diff << ")";
        res.ok = false;
        res.message = os.str();
        return res;
      }
    }
  }
  return res;
}

}  // namespace liandan
