#include "diffusion/gaussian_model.h"

#include <cmath>

namespace liandan::diffusion {

// ---------------------------------------------------------------- GaussianDenoiser

GaussianDenoiser::GaussianDenoiser(const Process& process, double mu, double s) : process(process), mu(mu), s(s) {
  LD_CHECK(s >= 0, "GaussianDenoiser: data std s = ", s, " must be >= 0");
}

double GaussianDenoiser::marginal_var(double t) const {
  double a = process.mean_coef(t), sd = process.marginal_std(t);
  return a * a * s * s + sd * sd;
}

Tensor GaussianDenoiser::forward(const Tensor& x, const Tensor& t) {
  // ε* = σ_t(x − m_t)/v_t = k·x + c with k = σ_t/v_t, c = −σ_t·m_t/v_t.
  Tensor k = batch_coef(t, x, [&](double u) { return process.marginal_std(u) / marginal_var(u); });
  Tensor c = batch_coef(t, x, [&](double u) { return -process.marginal_std(u) * marginal_mean(u) / marginal_var(u); });
  return add(mul(x, k), c);
}

Tensor GaussianDenoiser::score(const Tensor& x, const Tensor& t) const {
  Tensor k = batch_coef(t, x, [&](double u) { return -1.0 / marginal_var(u); });
  Tensor c = batch_coef(t, x, [&](double u) { return marginal_mean(u) / marginal_var(u); });
  return add(mul(x, k), c);
}

Tensor GaussianDenoiser::posterior_mean(const Tensor& x, const Tensor& t) const {
  Tensor k = batch_coef(t, x, [&](double u) { return process.mean_coef(u) * s * s / marginal_var(u); });
  Tensor c = batch_coef(t, x, [&](double u) {
    return mu - process.mean_coef(u) * s * s * marginal_mean(u) / marginal_var(u);
  });
  return add(mul(x, k), c);
}

Tensor GaussianDenoiser::flow(const Tensor& x, double t0, double t1) const {
  double r = std::sqrt(marginal_var(t1) / marginal_var(t0));
  return add(mul(x, r), marginal_mean(t1) - r * marginal_mean(t0));
}

Tensor GaussianDenoiser::log_prob(const Tensor& x, const Tensor& t) const {
  Tensor m = batch_coef(t, x, [&](double u) { return marginal_mean(u); });
  Tensor v = batch_coef(t, x, [&](double u) { return marginal_var(u); });
  Tensor lp = mul(add(div(square(sub(x, m)), v), log(mul(v, 2.0 * M_PI))), -0.5);
  return sum(lp.reshape({x.size(0), -1}), {1});
}

// ---------------------------------------------------------------- GaussianMixture

void GaussianMixture::check() const {
  int64_t K = num_components();
  LD_CHECK(K >= 1 && int64_t(means.size()) == K && int64_t(stds.size()) == K, "GaussianMixture: ", K,
           " weights, ", means.size(), " means, ", stds.size(), " stds");
  double total = 0;
  for (int64_t k = 0; k < K; ++k) {
    LD_CHECK(weights[size_t(k)] > 0 && stds[size_t(k)] >= 0 && int64_t(means[size_t(k)].size()) == dim(),
             "GaussianMixture: component ", k, " has weight ", weights[size_t(k)], ", std ", stds[size_t(k)],
             ", mean of size ", means[size_t(k)].size(), " (dim ", dim(), ")");
    total += weights[size_t(k)];
  }
  LD_CHECK(std::fabs(total - 1.0) < 1e-9, "GaussianMixture: weights sum to ", total, ", not 1");
}

GaussianMixture GaussianMixture::ring(int64_t K, double radius, double std, int64_t dim) {
  LD_CHECK(K >= 1 && dim >= 2, "GaussianMixture::ring: K = ", K, ", dim = ", dim);
  GaussianMixture g;
  for (int64_t k = 0; k < K; ++k) {
    std::vector<double> m(size_t(dim), 0.0);
    double th = 2.0 * M_PI * double(k) / double(K);
    m[0] = radius * std::cos(th);
    m[1] = radius * std::sin(th);
    g.weights.push_back(1.0 / double(K));
    g.means.push_back(m);
    g.stds.push_back(std);
  }
  return g;
}

Tensor GaussianMixture::sample(int64_t n, Generator& gen, DType dtype) const {
  check();
  int64_t D = dim();
  std::vector<double> u = rand({n}, gen, DType::f64).to_vector();
  std::vector<double> z = randn({n, D}, gen, DType::f64).to_vector();
  std::vector<double> out(size_t(n * D));
  for (int64_t i = 0; i < n; ++i) {
    // Component by inverting the cumulative weights; the last one catches rounding.
    size_t k = 0;
    for (double c = weights[0]; k + 1 < weights.size() && u[size_t(i)] >= c; c += weights[++k]) {
    }
    for (int64_t d = 0; d < D; ++d)
      out[size_t(i * D + d)] = means[k][size_t(d)] + stds[k] * z[size_t(i * D + d)];
  }
  return from_vector(out, {n, D}, dtype);
}

std::vector<double> GaussianMixture::mean() const {
  check();
  std::vector<double> m(size_t(dim()), 0.0);
  for (size_t k = 0; k < weights.size(); ++k)
    for (size_t d = 0; d < m.size(); ++d) m[d] += weights[k] * means[k][d];
  return m;
}

std::vector<double> GaussianMixture::covariance() const {
  std::vector<double> m = mean();
  size_t D = m.size();
  std::vector<double> c(D * D, 0.0);
  for (size_t k = 0; k < weights.size(); ++k)
    for (size_t i = 0; i < D; ++i)
      for (size_t j = 0; j < D; ++j)
        c[i * D + j] += weights[k] * (means[k][i] * means[k][j] + (i == j ? stds[k] * stds[k] : 0.0));
  for (size_t i = 0; i < D; ++i)
    for (size_t j = 0; j < D; ++j) c[i * D + j] -= m[i] * m[j];
  return c;
}

// ---------------------------------------------------------------- MixtureDenoiser

MixtureDenoiser::MixtureDenoiser(const Process& process, GaussianMixture mixture)
    : process(process), mixture(std::move(mixture)) {
  this->mixture.check();
}

MixtureDenoiser::Parts MixtureDenoiser::parts(const Tensor& x, const Tensor& t) const {
  int64_t K = mixture.num_components(), D = mixture.dim();
  LD_CHECK(x.dim() == 2 && x.size(1) == D, "MixtureDenoiser: x must be [B, ", D, "], got ", shape_str(x.shape()));
  std::vector<double> mflat, logw, s2;
  for (int64_t k = 0; k < K; ++k) {
    mflat.insert(mflat.end(), mixture.means[size_t(k)].begin(), mixture.means[size_t(k)].end());
    logw.push_back(std::log(mixture.weights[size_t(k)]));
    s2.push_back(mixture.stds[size_t(k)] * mixture.stds[size_t(k)]);
  }
  Tensor means = from_vector(mflat, {1, K, D}, x.dtype());
  Tensor a = batch_coef(t, x, [&](double u) { return process.mean_coef(u); });  // [B, 1] or []
  Tensor sd = batch_coef(t, x, [&](double u) { return process.marginal_std(u); });
  Parts p;
  // diff [B, K, D] = x − a·μ_k;  var [B|1, K] = a²s_k² + σ²;  logp [B, K] = log N(x; aμ_k, var·I) + log w_k.
  Tensor a3 = a.dim() == 0 ? a : a.unsqueeze(-1);
  p.diff = sub(x.unsqueeze(1), mul(a3, means));
  p.var = add(mul(square(a), from_vector(s2, {1, K}, x.dtype())), square(sd));
  Tensor sq = sum(square(p.diff), {2});
  p.logp = add(mul(add(div(sq, p.var), mul(log(mul(p.var, 2.0 * M_PI)), double(D))), -0.5),
               from_vector(logw, {1, K}, x.dtype()));
  return p;
}

Tensor MixtureDenoiser::score(const Tensor& x, const Tensor& t) const {
  Parts p = parts(x, t);
  Tensor r = softmax(p.logp, 1);                        // responsibilities [B, K]
  Tensor w = div(r, p.var).unsqueeze(-1);               // [B, K, 1]
  return neg(sum(mul(w, p.diff), {1}));                 // [B, D]
}

Tensor MixtureDenoiser::forward(const Tensor& x, const Tensor& t) {
  Tensor sd = batch_coef(t, x, [&](double u) { return process.marginal_std(u); });
  return neg(mul(score(x, t), sd));
}

Tensor MixtureDenoiser::log_prob(const Tensor& x, const Tensor& t) const { return logsumexp(parts(x, t).logp, {1}); }

}  // namespace liandan::diffusion
