#pragma once
// gradcheck: compares autograd's gradients with central finite differences in f64.
// The output is projected on a fixed random direction r (L = sum(f(x) * r)), so one backward
// checks the full vector-Jacobian product; each input element needs two extra forwards.
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace liandan {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // first mismatch: input, element, analytic vs numeric
  explicit operator bool() const { return ok; }
};

// `inputs` must be f64; those with requires_grad are checked. They may be non-contiguous views.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, GradcheckOptions opt = {});

}  // namespace liandan
