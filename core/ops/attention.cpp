// Fused softmax attention and linear attention with RoPE (see attention.h).
#include "core/ops/attention.h"


#include <cmath>
#include <limits>

#include "core/cpu/blas.h"
#include "core/cpu/gemm_bf16.h"
#include "core/cpu/loops.h"
#include "core/cpu/vecmath.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/ops/composite.h"

namespace liandan {

namespace {

struct AttnGeom {
  int64_t BH, Tq, Tk, D, Dv, B;  // B: batch (for key_valid), heads per batch = BH / B
  double scale;
  bool causal;
};

// Row layouts of the operands (HeadRows, core/device.h): q, k, v and the output's (and for the backward dO's,
// dQ's, dK's, dV's) — heads in [B, H, T, D] views are read and written in place, through the GEMMs' leading dims.
struct AttnRows {
  HeadRows q, k, v, o, g, dq, dk, dv;
};

// Scores of one (batch, head) into S [Tq, Tk], masked entries set to -inf.
template <class T>
void scores(const AttnGeom& g, const T* q, int64_t ldq, const T* k, int64_t ldk, const T* valid, T* S) {
  cpu::gemm_columns<T>(false, true, g.Tq, g.Tk, g.D, T(g.scale), q, ldq, k, ldk, T(0), S, g.Tk);
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < g.Tq; ++i) {
    T* row = S + i * g.Tk;
    if (g.causal)
      for (int64_t j = g.Tk - g.Tq + i + 1; j < g.Tk; ++j) row[j] = ninf;
    if (valid)
      for (int64_t j = 0; j < g.Tk; ++j)
        if (valid[j] == 0) row[j] = ninf;
  }
}

template <class T>
void attention_forward(const AttnGeom& g, const AttnRows& r, const T* q, const T* k, const T* v, const T* valid,
                       T* out, T* lse) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    Tensor scores_buf;  // [Tq, Tk] of one head at a time
    T* const S = cpu::scratch<T>(scores_buf, g.Tq * g.Tk);
    for (int64_t bh = b0; bh < b1; ++bh) {
      const T* vb = valid ? valid + (bh / (g.BH / g.B)) * g.Tk : nullptr;
      scores(g, q + r.q.at(bh, 0), r.q.st, k + r.k.at(bh, 0), r.k.st, vb, S);
      for (int64_t i = 0; i < g.Tq; ++i) {
        T* row = S + i * g.Tk;
        T m = cpu::row_max(row, g.Tk);
        if (m == -std::numeric_limits<T>::infinity()) {  // nothing visible: zeros
          std::fill(row, row + g.Tk, T(0));
          lse[bh * g.Tq + i] = std::numeric_limits<T>::infinity();
          continue;
        }
        T sum = 0;
        for (int64_t j = 0; j < g.Tk; ++j) {
          row[j] = cpu::vexp(row[j] - m);
          sum += row[j];
        }
        T inv = T(1) / sum;
        for (int64_t j = 0; j < g.Tk; ++j) row[j] *= inv;
        lse[bh * g.Tq + i] = m + std::log(sum);
      }
      cpu::gemm_columns<T>(false, false, g.Tq, g.Dv, g.Tk, T(1), S, g.Tk, v + r.v.at(bh, 0), r.v.st, T(0),
                           out + r.o.at(bh, 0), r.o.st);
    }
  }, 1);
}

template <class T>
void attention_backward(const AttnGeom& g, const AttnRows& r, const T* q, const T* k, const T* v, const T* valid,
                        const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    Tensor p_buf, dp_buf;  // [Tq, Tk] each, of one head at a time
    T *const P = cpu::scratch<T>(p_buf, g.Tq * g.Tk), *const dP = cpu::scratch<T>(dp_buf, g.Tq * g.Tk);
    for (int64_t bh = b0; bh < b1; ++bh) {
      const T *qb = q + r.q.at(bh, 0), *kb = k + r.k.at(bh, 0), *vb = v + r.v.at(bh, 0);
      const T *ob = out + r.o.at(bh, 0), *gb = dout + r.g.at(bh, 0);
      const T* mb = valid ? valid + (bh / (g.BH / g.B)) * g.Tk : nullptr;
      scores(g, qb, r.q.st, kb, r.k.st, mb, P);
      for (int64_t i = 0; i < g.Tq; ++i) {  // P = exp(S - lse), recomputed
        T l = lse[bh * g.Tq + i];
        T* row = P + i * g.Tk;
        for (int64_t j = 0; j < g.Tk; ++j) row[j] = std::isinf(l) ? T(0) : cpu::vexp(row[j] - l);
      }
      cpu::gemm_columns<T>(true, false, g.Tk, g.Dv, g.Tq, T(1), P, g.Tk, gb, r.g.st, T(0), dv + r.dv.at(bh, 0),
                           r.dv.st);
      cpu::gemm_columns<T>(false, true, g.Tq, g.Tk, g.Dv, T(1), gb, r.g.st, vb, r.v.st, T(0), dP, g.Tk);
      for (int64_t i = 0; i < g.Tq; ++i) {  // dS = P * (dP - rowsum(dO * O)), times the scale
        T di = cpu::row_dot(gb + i * r.g.st, ob + i * r.o.st, g.Dv);
        T *p = P + i * g.Tk, *d = dP + i * g.Tk;
        for (int64_t j = 0; j < g.Tk; ++j) p[j] = p[j] * (d[j] - di) * T(g.scale);
      }
      cpu::gemm_columns<T>(false, false, g.Tq, g.D, g.Tk, T(1), P, g.Tk, kb, r.k.st, T(0), dq + r.dq.at(bh, 0),
                           r.dq.st);
      cpu::gemm_columns<T>(true, false, g.Tk, g.D, g.Tq, T(1), P, g.Tk, qb, r.q.st, T(0), dk + r.dk.at(bh, 0), r.dk.st);
    }
  }, 1);
}

// ---- the same two kernels with bf16 GEMM operands (the CPU's bf16 autocast): q, k, v and dO as bf16, S, P, dP
// and dS in f32, P and dS rounded to bf16 for their GEMMs (what the autocast composite — and PyTorch's bf16 matmuls —
// round), the softmax and its statistics in f32. O: the element type of the output and of dQ, dK, dV (q's dtype:
// bf16 for autocast's half activations, f32 for f32 inputs under autocast), which cpu::gemm_bf16 writes directly.
using cpu::bf16_t;
inline const bf16_t* bits(const bfloat16* p) { return reinterpret_cast<const bf16_t*>(p); }
inline bf16_t* bits(bfloat16* p) { return reinterpret_cast<bf16_t*>(p); }
inline float* bits(float* p) { return p; }

// f32 scores of one head into S [Tq, Tk] (bf16 GEMM), masked entries set to -inf.
void scores_bf16(const AttnGeom& g, const bfloat16* q, int64_t ldq, const bfloat16* k, int64_t ldk, const float* valid,
                 float* S) {
  cpu::gemm_bf16(false, true, g.Tq, g.Tk, g.D, float(g.scale), bits(q), ldq, bits(k), ldk, 0.0f, S, g.Tk);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < g.Tq; ++i) {
    float* row = S + i * g.Tk;
    if (g.causal)
      for (int64_t j = g.Tk - g.Tq + i + 1; j < g.Tk; ++j) row[j] = ninf;
    if (valid)
      for (int64_t j = 0; j < g.Tk; ++j)
        if (valid[j] == 0) row[j] = ninf;
  }
}

template <class O>
void attention_forward_bf16(const AttnGeom& g, const AttnRows& r, const bfloat16* q, const bfloat16* k,
                            const bfloat16* v, const float* valid, O* out, float* lse) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    Tensor s_buf, p_buf;  // [Tq, Tk] of one head at a time: f32 scores, bf16 probabilities
    float* const S = cpu::scratch<float>(s_buf, g.Tq * g.Tk);
    bfloat16* const P = cpu::scratch<bfloat16>(p_buf, g.Tq * g.Tk);
    for (int64_t bh = b0; bh < b1; ++bh) {
      const float* vb = valid ? valid + (bh / (g.BH / g.B)) * g.Tk : nullptr;
      scores_bf16(g, q + r.q.at(bh, 0), r.q.st, k + r.k.at(bh, 0), r.k.st, vb, S);
      for (int64_t i = 0; i < g.Tq; ++i) {
        float* row = S + i * g.Tk;
        bf16_t* prow = bits(P + i * g.Tk);
        const float m = cpu::row_max(row, g.Tk);
        if (m == -std::numeric_limits<float>::infinity()) {  // nothing visible: zeros
          std::fill(prow, prow + g.Tk, bf16_t(0));
          lse[bh * g.Tq + i] = std::numeric_limits<float>::infinity();
          continue;
        }
        float sum = 0;
        for (int64_t j = 0; j < g.Tk; ++j) {
          row[j] = cpu::vexp(row[j] - m);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < g.Tk; ++j) prow[j] = float_to_bf16(row[j] * inv);
        lse[bh * g.Tq + i] = m + std::log(sum);
      }
      cpu::gemm_bf16(false, false, g.Tq, g.Dv, g.Tk, 1.0f, bits(P), g.Tk, bits(v + r.v.at(bh, 0)), r.v.st, 0.0f,
                     bits(out + r.o.at(bh, 0)), r.o.st);
    }
  }, 1);
}

template <class O>
void attention_backward_bf16(const AttnGeom& g, const AttnRows& r, const bfloat16* q, const bfloat16* k,
                             const bfloat16* v, const float* valid, const O* out, const float* lse,
                             const bfloat16* dout, O* dq, O* dk, O* dv) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    Tensor s_buf, dp_buf, p_buf;  // [Tq, Tk] each, of one head at a time
    float *const S = cpu::scratch<float>(s_buf, g.Tq * g.Tk), *const dP = cpu::scratch<float>(dp_buf, g.Tq * g.Tk);
    bfloat16* const P = cpu::scratch<bfloat16>(p_buf, g.Tq * g.Tk);
    for (int64_t bh = b0; bh < b1; ++bh) {
      const bfloat16 *qb = q + r.q.at(bh, 0), *kb = k + r.k.at(bh, 0), *vb = v + r.v.at(bh, 0);
      const bfloat16* gb = dout + r.g.at(bh, 0);
      const O* ob = out + r.o.at(bh, 0);
      const float* mb = valid ? valid + (bh / (g.BH / g.B)) * g.Tk : nullptr;
      scores_bf16(g, qb, r.q.st, kb, r.k.st, mb, S);
      for (int64_t i = 0; i < g.Tq; ++i) {  // P = exp(S - lse), recomputed, and rounded for dV's GEMM
        const float l = lse[bh * g.Tq + i];
        float* row = S + i * g.Tk;
        bf16_t* prow = bits(P + i * g.Tk);
        for (int64_t j = 0; j < g.Tk; ++j) {
          row[j] = std::isinf(l) ? 0.0f : cpu::vexp(row[j] - l);
          prow[j] = float_to_bf16(row[j]);
        }
      }
      cpu::gemm_bf16(true, false, g.Tk, g.Dv, g.Tq, 1.0f, bits(P), g.Tk, bits(gb), r.g.st, 0.0f,
                     bits(dv + r.dv.at(bh, 0)), r.dv.st);
      cpu::gemm_bf16(false, true, g.Tq, g.Tk, g.Dv, 1.0f, bits(gb), r.g.st, bits(vb), r.v.st, 0.0f, dP, g.Tk);
      for (int64_t i = 0; i < g.Tq; ++i) {  // dS = P * (dP - rowsum(dO * O)) * scale, rounded for its GEMMs
        float di = 0;
        for (int64_t c = 0; c < g.Dv; ++c) di += float(gb[i * r.g.st + c]) * float(ob[i * r.o.st + c]);
        const float *p = S + i * g.Tk, *d = dP + i * g.Tk;
        bf16_t* ds = bits(P + i * g.Tk);
        for (int64_t j = 0; j < g.Tk; ++j) ds[j] = float_to_bf16(p[j] * (d[j] - di) * float(g.scale));
      }
      cpu::gemm_bf16(false, false, g.Tq, g.D, g.Tk, 1.0f, bits(P), g.Tk, bits(kb), r.k.st, 0.0f,
                     bits(dq + r.dq.at(bh, 0)), r.dq.st);
      cpu::gemm_bf16(true, false, g.Tk, g.D, g.Tq, 1.0f, bits(P), g.Tk, bits(qb), r.q.st, 0.0f,
                     bits(dk + r.dk.at(bh, 0)), r.dk.st);
    }
  }, 1);
}

// ---- causal linear attention: running S = sum_j rk_j v_j^T and z = sum_j fk_j (in double)

struct LinGeom {
  int64_t BH, T, D, Dv;
};

template <class T>
void causal_linear_forward(const LinGeom& g, const T* rq, const T* rk, const T* fq, const T* fk, const T* v, T* out) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    std::vector<double> S(static_cast<size_t>(g.D * g.Dv)), z(static_cast<size_t>(g.D)), num(static_cast<size_t>(g.Dv));
    for (int64_t bh = b0; bh < b1; ++bh) {
      std::fill(S.begin(), S.end(), 0.0);
      std::fill(z.begin(), z.end(), 0.0);
      for (int64_t t = 0; t < g.T; ++t) {
        const T *rkt = rk + (bh * g.T + t) * g.D, *fkt = fk + (bh * g.T + t) * g.D, *vt = v + (bh * g.T + t) * g.Dv;
        const T *rqt = rq + (bh * g.T + t) * g.D, *fqt = fq + (bh * g.T + t) * g.D;
        for (int64_t a = 0; a < g.D; ++a) {
          for (int64_t c = 0; c < g.Dv; ++c) S[size_t(a * g.Dv + c)] += double(rkt[a]) * double(vt[c]);
          z[size_t(a)] += double(fkt[a]);
        }
        double den = 0;
        for (int64_t a = 0; a < g.D; ++a) den += double(fqt[a]) * z[size_t(a)];
        // num = rq^T S, accumulated row by row of S so the inner loop is contiguous (vectorizes)
        std::fill(num.begin(), num.end(), 0.0);
        for (int64_t a = 0; a < g.D; ++a) {
          const double* Sa = S.data() + a * g.Dv;
          double r = double(rqt[a]);
          for (int64_t c = 0; c < g.Dv; ++c) num[size_t(c)] += r * Sa[c];
        }
        T* ot = out + (bh * g.T + t) * g.Dv;
        for (int64_t c = 0; c < g.Dv; ++c) ot[c] = T(num[size_t(c)] / den);
      }
    }
  }, 1);
}

// Backward walks t from the end: S_t and z_t are recovered by subtracting step t's terms from the
// totals, and the gradients flowing into S and z from later queries are accumulated as GS, Gz.
template <class T>
void causal_linear_backward(const LinGeom& g, const T* rq, const T* rk, const T* fq, const T* fk, const T* v,
                            const T* out, const T* dout, T* drq, T* drk, T* dfq, T* dfk, T* dv) {
  cpu::parallel_range(g.BH, [&](int64_t b0, int64_t b1) {
    size_t DDv = static_cast<size_t>(g.D * g.Dv);
    std::vector<double> S(DDv), z(static_cast<size_t>(g.D)), GS(DDv), Gz(static_cast<size_t>(g.D)), dnum(static_cast<size_t>(g.Dv)),
        dvacc(static_cast<size_t>(g.Dv));
    for (int64_t bh = b0; bh < b1; ++bh) {
      std::fill(S.begin(), S.end(), 0.0);
      std::fill(z.begin(), z.end(), 0.0);
      std::fill(GS.begin(), GS.end(), 0.0);
      std::fill(Gz.begin(), Gz.end(), 0.0);
      auto row = [&](const T* base, int64_t t, int64_t w) { return base + (bh * g.T + t) * w; };
      for (int64_t t = 0; t < g.T; ++t)
        for (int64_t a = 0; a < g.D; ++a) {
          for (int64_t c = 0; c < g.Dv; ++c) S[size_t(a * g.Dv + c)] += double(row(rk, t, g.D)[a]) * double(row(v, t, g.Dv)[c]);
          z[size_t(a)] += double(row(fk, t, g.D)[a]);
        }
      for (int64_t t = g.T - 1; t >= 0; --t) {
        const T *rqt = row(rq, t, g.D), *rkt = row(rk, t, g.D), *fqt = row(fq, t, g.D), *fkt = row(fk, t, g.D);
        const T *vt = row(v, t, g.Dv), *ot = row(out, t, g.Dv), *gt = row(dout, t, g.Dv);
        double den = 0, go = 0;
        for (int64_t a = 0; a < g.D; ++a) den += double(fqt[a]) * z[size_t(a)];
        for (int64_t c = 0; c < g.Dv; ++c) {
          dnum[size_t(c)] = double(gt[c]) / den;
          go += double(gt[c]) * double(ot[c]);
        }
        double dden = -go / den;
        T *drqt = drq + (bh * g.T + t) * g.D, *dfqt = dfq + (bh * g.T + t) * g.D;
        for (int64_t a = 0; a < g.D; ++a) {
          double acc = 0;
          for (int64_t c = 0; c < g.Dv; ++c) acc += S[size_t(a * g.Dv + c)] * dnum[size_t(c)];
          drqt[a] = T(acc);
          dfqt[a] = T(dden * z[size_t(a)]);
        }
        // this query's contribution to the gradients of S_t and z_t (which contain steps j <= t)
        for (int64_t a = 0; a < g.D; ++a) {
          for (int64_t c = 0; c < g.Dv; ++c) GS[size_t(a * g.Dv + c)] += double(rqt[a]) * dnum[size_t(c)];
          Gz[size_t(a)] += dden * double(fqt[a]);
        }
        T *drkt = drk + (bh * g.T + t) * g.D, *dfkt = dfk + (bh * g.T + t) * g.D, *dvt = dv + (bh * g.T + t) * g.Dv;
        for (int64_t a = 0; a < g.D; ++a) {
          double acc = 0;
          for (int64_t c = 0; c < g.Dv; ++c) acc += GS[size_t(a * g.Dv + c)] * double(vt[c]);
          drkt[a] = T(acc);
          dfkt[a] = T(Gz[size_t(a)]);
        }
        std::fill(dvacc.begin(), dvacc.end(), 0.0);  // dv = GS^T rk, row by row of GS (contiguous)
        for (int64_t a = 0; a < g.D; ++a) {
          const double* Ga = GS.data() + a * g.Dv;
          double r = double(rkt[a]);
          for (int64_t c = 0; c < g.Dv; ++c) dvacc[size_t(c)] += Ga[c] * r;
        }
        for (int64_t c = 0; c < g.Dv; ++c) dvt[c] = T(dvacc[size_t(c)]);
        for (int64_t a = 0; a < g.D; ++a) {  // S_{t-1}, z_{t-1}
          for (int64_t c = 0; c < g.Dv; ++c) S[size_t(a * g.Dv + c)] -= double(rkt[a]) * double(vt[c]);
          z[size_t(a)] -= double(fkt[a]);
        }
      }
    }
  }, 1);
}

// The dtype of the row statistics (lse) and of the key mask: f32 for half-format q, k, v.
DType stats_dtype(DType qdt) { return is_half(qdt) ? DType::f32 : qdt; }

// An operand as the fused kernels read it (HeadRows): a 4-D [B, H, T, D] tensor whose last dim is contiguous
// as it is — a view needs no copy —, anything else made contiguous.
Tensor rows_layout(const Tensor& t) {
  bool in_place = t.dim() == 4 && (t.stride(3) == 1 || t.size(3) <= 1) &&
                  (t.stride(2) >= t.size(3) || t.size(2) <= 1);  // (GEMMs need ld >= D)
  return in_place ? t : t.contiguous();
}

// A new [.., T, width] result shaped like t: for 4-D [B, H, T, ·] laid out [B, T, H, width] (the layout the
// head merge reads as a view), otherwise contiguous.
Tensor empty_heads_like(const Tensor& t, int64_t width, TensorOptions o) {
  Shape s = t.shape();
  s.back() = width;
  if (t.dim() != 4) return empty(s, o);
  return empty({s[0], s[2], s[1], s[3]}, o).permute({0, 2, 1, 3});
}

void check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  LD_CHECK(q.defined() && k.defined() && v.defined(), op, ": undefined argument");
  LD_CHECK(q.dim() >= 2 && k.dim() == q.dim() && v.dim() == q.dim(), op, ": q ", shape_str(q.shape()), ", k ",
           shape_str(k.shape()), ", v ", shape_str(v.shape()), " must have the same rank >= 2");
  LD_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op, ": dtype mismatch q ", dtype_name(q.dtype()),
           ", k ", dtype_name(k.dtype()), ", v ", dtype_name(v.dtype()));
  Shape lq(q.shape().begin(), q.shape().end() - 2), lk(k.shape().begin(), k.shape().end() - 2),
      lv(v.shape().begin(), v.shape().end() - 2);
  LD_CHECK(lq == lk && lq == lv && q.size(-1) == k.size(-1) && k.size(-2) == v.size(-2), op, ": shapes q ",
           shape_str(q.shape()), ", k ", shape_str(k.shape()), ", v ", shape_str(v.shape()),
           " do not match (expected [.., Tq, D], [.., Tk, D], [.., Tk, Dv])");
}

}  // namespace

HeadRows head_rows(const Tensor& t) {
  const int64_t T = t.size(-2), D = t.size(-1);
  if (t.dim() == 4 && (t.stride(3) == 1 || D <= 1) && (t.stride(2) >= D || T <= 1))  // (GEMMs need ld >= D)
    return {t.stride(0), t.stride(1), T <= 1 ? D : t.stride(2), std::max<int64_t>(t.size(1), 1)};
  LD_CHECK(t.is_contiguous(), "head_rows: a ", shape_str(t.shape()),
           " tensor that is neither [B, H, T, D] with a contiguous last dim nor contiguous");
  return {0, T * D, D, std::max<int64_t>(shape_numel(Shape(t.shape().begin(), t.shape().end() - 2)), 1)};
}

namespace {
// RoPE's tables for the op: [Tk, P], 2P <= D, cos and sin alike.
void check_rope_tables(const Tensor& q, const Tensor& k, const AttentionOptions& opt, const char* op) {
  const Tensor &c = opt.rope_cos, &s = opt.rope_sin;
  LD_CHECK(c.defined() && s.defined(), op, ": rope_cos and rope_sin must be given together");
  LD_CHECK(c.dim() == 2 && c.shape() == s.shape() && c.size(0) == k.size(-2) && 2 * c.size(1) <= q.size(-1), op,
           ": RoPE tables must be [Tk, P] = [", k.size(-2), ", P] with 2P <= D = ", q.size(-1), ", got cos ",
           shape_str(c.shape()), ", sin ", shape_str(s.shape()));
}

// The op's composite RoPE form: q and k rotated (q by the table rows of its positions Tk − Tq ..), then attention.
Tensor rope_then_attention(const Tensor& q, const Tensor& k, const Tensor& v, AttentionOptions opt) {
  const int64_t Tq = q.size(-2), Tk = k.size(-2);
  Tensor c = opt.rope_cos.to(q.device()), s = opt.rope_sin.to(q.device());  // (a no-op where they are)
  Tensor qr = rope(q, c.narrow(0, Tk - Tq, Tq), s.narrow(0, Tk - Tq, Tq), opt.rope_pairing);
  Tensor kr = rope(k, c, s, opt.rope_pairing);
  opt.rope_cos = opt.rope_sin = Tensor();
  return scaled_dot_product_attention(qr, kr, v, opt);
}

// The CPU's bf16 attention (q, k, v in bf16 — autocast's half activations — or f32 under bf16 autocast): the fused
// kernels with bf16 GEMMs (attention_forward_bf16), output and gradients in q's dtype. valid: the f32 key mask or
// undefined.
Tensor attention_cpu_bf16(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& valid, const AttnGeom& g) {
  const char* op = "scaled_dot_product_attention";
  auto operand = [](const Tensor& t) { return rows_layout(t.dtype() == DType::bf16 ? t : t.to(DType::bf16)); };
  Tensor qc = operand(q), kc = operand(k), vc = operand(v);
  const DType od = q.dtype();
  Tensor out = empty_heads_like(q, g.Dv, od);
  Tensor lse = empty({std::max<int64_t>(g.BH * g.Tq, 1)}, DType::f32);
  const float* pv = valid.defined() ? valid.data_ptr<float>() : nullptr;
  AttnRows r{head_rows(qc), head_rows(kc), head_rows(vc), head_rows(out)};
  auto with_out = [od](auto&& f) {
    if (od == DType::bf16) f(bfloat16());
    else f(float());
  };
  with_out([&](auto o) {
    using O = decltype(o);
    attention_forward_bf16<O>(g, r, qc.data_ptr<bfloat16>(), kc.data_ptr<bfloat16>(), vc.data_ptr<bfloat16>(), pv,
                              out.data_ptr<O>(), lse.data_ptr<float>());
  });
  if (!needs_grad({&q, &k, &v})) return out;
  SavedTensor sq(qc, op), sk(kc, op), sv(vc, op), so(out, op);
  record(op, out, {q, k, v}, [=](const Tensor& g_in) {
    const Tensor &qv = sq.get(), &kv = sk.get(), &vv = sv.get(), &ov = so.get();
    Tensor gout = rows_layout(g_in.dtype() == DType::bf16 ? g_in : g_in.to(DType::bf16));
    Tensor dq = empty_heads_like(qv, g.D, od), dk = empty_heads_like(kv, g.D, od), dv = empty_heads_like(vv, g.Dv, od);
    AttnRows rb{head_rows(qv), head_rows(kv), head_rows(vv), head_rows(ov),
                head_rows(gout), head_rows(dq), head_rows(dk), head_rows(dv)};
    const float* pvb = valid.defined() ? valid.data_ptr<float>() : nullptr;
    with_out([&](auto o) {
      using O = decltype(o);
      attention_backward_bf16<O>(g, rb, qv.data_ptr<bfloat16>(), kv.data_ptr<bfloat16>(), vv.data_ptr<bfloat16>(), pvb,
                                 ov.data_ptr<O>(), lse.data_ptr<float>(), gout.data_ptr<bfloat16>(), dq.data_ptr<O>(),
                                 dk.data_ptr<O>(), dv.data_ptr<O>());
    });
    return std::vector<Tensor>{dq, dk, dv};
  });
  return out;
}
}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  const char* op = "scaled_dot_product_attention";
  check_qkv(q, k, v, op);
  const bool with_rope = opt.rope_cos.defined() || opt.rope_sin.defined();
  if (with_rope) {
    check_rope_tables(q, k, opt, op);
    LD_CHECK(k.size(-2) >= q.size(-2), op, ": RoPE inside attention needs Tq <= Tk (queries at the last positions), got Tq ",
             q.size(-2), ", Tk ", k.size(-2));
    // Fused on a device (tables that need gradients take the composite: the kernels give none for them).
    bool table_grads = grad_mode_enabled() && (opt.rope_cos.requires_grad() || opt.rope_sin.requires_grad());
    if (q.device().is_cpu() || table_grads) return rope_then_attention(q, k, v, opt);
  }
  AttnGeom g{1, q.size(-2), k.size(-2), q.size(-1), v.size(-1), 1,
             opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(q.size(-1))), opt.causal};
  g.BH = g.Tq ? q.numel() / (g.Tq * g.D) : 0;
  if (g.D == 0) g.BH = shape_numel(Shape(q.shape().begin(), q.shape().end() - 2));
  LD_CHECK(!opt.causal || g.Tq <= g.Tk, op, ": causal attention needs Tq <= Tk, got Tq ", g.Tq, ", Tk ", g.Tk);
  Tensor valid;
  if (opt.key_valid.defined()) {
    LD_CHECK(q.dim() >= 3 && opt.key_valid.dim() == 2 && opt.key_valid.size(0) == q.size(0) &&
                 opt.key_valid.size(1) == g.Tk,
             op, ": key_valid must be [B, Tk] = [", q.dim() >= 3 ? q.size(0) : 0, ", ", g.Tk, "], got ",
             shape_str(opt.key_valid.shape()));
    valid = opt.key_valid.to(stats_dtype(q.dtype())).contiguous();
    g.B = q.size(0);
  }
  // On a device the fused kernel when it handles the shape — under autocast its tensor-core form, with the
  // composite's autocast numbers. On the CPU under autocast, the composite (its GEMMs take the half format).
  bool on_device = !q.device().is_cpu();
  // Half q, k, v (autocast's half activations): the tensor-core kernel on a device; elsewhere the autocast
  // composite on their (exact) f32 widening, its output rounded back to the half format.
  auto half_composite = [&] {
    Autocast ac(q.dtype());
    return composite::attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), opt).to(q.dtype());
  };
  // bf16 on the CPU: the fused kernels with bf16 GEMMs (AVX512-BF16 where the CPU has it); f16: the composite.
  if (!on_device && (q.dtype() == DType::bf16 || (q.dtype() == DType::f32 && autocast_dtype() == DType::bf16)))
    return attention_cpu_bf16(q, k, v, valid, g);
  if (is_half(q.dtype()) && !on_device) return half_composite();
  if (autocast_enabled() && !on_device) return composite::attention(q, k, v, opt);
  Tensor qc = rows_layout(q), kc = rows_layout(k), vc = rows_layout(v);
  TensorOptions o{q.dtype(), q.device()};
  Tensor out = empty_heads_like(q, g.Dv, o);
  Tensor lse = empty({std::max<int64_t>(g.BH * g.Tq, 1)}, {stats_dtype(q.dtype()), q.device()});
  AttentionShape shape{g.BH, g.Tq, g.Tk, g.D, g.Dv, g.BH / g.B, g.scale, g.causal, autocast_dtype()};
  Tensor rope_cos, rope_sin;  // the device's f32 tables (kept alive by the backward)
  if (with_rope) {
    rope_cos = opt.rope_cos.detach().to(DType::f32).to(q.device()).contiguous();
    rope_sin = opt.rope_sin.detach().to(DType::f32).to(q.device()).contiguous();
    shape.rope_cos = static_cast<const float*>(rope_cos.device_data());
    shape.rope_sin = static_cast<const float*>(rope_sin.device_data());
    shape.rope_pairs = rope_cos.size(1);
    shape.rope_half = opt.rope_pairing == RopePairing::half;
  }
  if (on_device) {
    if (valid.defined()) valid = valid.to(q.device());
    if (!device_backend(q.device()).attention_forward(shape, qc, kc, vc, valid, out, lse)) {
      if (with_rope) return rope_then_attention(q, k, v, opt);
      return is_half(q.dtype()) ? half_composite() : composite::attention(q, k, v, opt);
    }
  } else {
    AttnRows r{head_rows(qc), head_rows(kc), head_rows(vc), head_rows(out)};
    LD_DISPATCH_FLOAT(q.dtype(), op, [&] {
      const scalar_t* pv = valid.defined() ? valid.data_ptr<scalar_t>() : nullptr;
      attention_forward<scalar_t>(g, r, qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(), pv,
                                  out.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>());
    });
  }
  if (needs_grad({&q, &k, &v})) {
    SavedTensor sq(qc, op), sk(kc, op), sv(vc, op), so(out, op);
    record(op, out, {q, k, v}, [=, tables = std::make_pair(rope_cos, rope_sin)](const Tensor& g_in) {
      Tensor gout = rows_layout(g_in);
      const Tensor &qv = sq.get(), &kv = sk.get(), &vv = sv.get(), &ov = so.get();
      TensorOptions og{qv.dtype(), qv.device()};
      // The gradients in the [B, T, H, D] layout too: the head split's backward then reads rows, not columns.
      Tensor dq = empty_heads_like(qv, g.D, og), dk = empty_heads_like(kv, g.D, og), dv = empty_heads_like(vv, g.Dv, og);
      if (on_device) {
        LD_CHECK(device_backend(qv.device()).attention_backward(shape, qv, kv, vv, valid, ov, lse, gout, dq, dk, dv),
                 op, ": the device's fused backward refused a shape its forward took");
        return std::vector<Tensor>{dq, dk, dv};
      }
      AttnRows r{head_rows(qv), head_rows(kv), head_rows(vv), head_rows(ov),
                 head_rows(gout), head_rows(dq), head_rows(dk), head_rows(dv)};
      LD_DISPATCH_FLOAT(qv.dtype(), op, [&] {
        const scalar_t* pv = valid.defined() ? valid.data_ptr<scalar_t>() : nullptr;
        attention_backward<scalar_t>(g, r, qv.data_ptr<scalar_t>(), kv.data_ptr<scalar_t>(), vv.data_ptr<scalar_t>(), pv,
                                     ov.data_ptr<scalar_t>(), lse.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(),
                                     dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
      });
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return out;
}

Tensor causal_linear_attention_core(const Tensor& rq, const Tensor& rk, const Tensor& fq, const Tensor& fk,
                                    const Tensor& v) {
  const char* op = "causal_linear_attention";
  check_qkv(rq, rk, v, op);
  LD_CHECK(fq.shape() == rq.shape() && fk.shape() == rk.shape() && rq.shape() == rk.shape(), op,
           ": feature shapes differ: rq ", shape_str(rq.shape()), ", rk ", shape_str(rk.shape()), ", fq ",
           shape_str(fq.shape()), ", fk ", shape_str(fk.shape()));
  if (!rq.device().is_cpu() || autocast_enabled()) return composite::causal_linear_attention(rq, rk, fq, fk, v);
  LinGeom g{0, rq.size(-2), rq.size(-1), v.size(-1)};
  g.BH = shape_numel(Shape(rq.shape().begin(), rq.shape().end() - 2));
  std::vector<Tensor> in = {rq.contiguous(), rk.contiguous(), fq.contiguous(), fk.contiguous(), v.contiguous()};
  Shape os = rq.shape();
  os.back() = g.Dv;
  Tensor out = empty(os, rq.dtype());
  LD_DISPATCH_FLOAT(rq.dtype(), op, [&] {
    causal_linear_forward<scalar_t>(g, in[0].data_ptr<scalar_t>(), in[1].data_ptr<scalar_t>(), in[2].data_ptr<scalar_t>(),
                                    in[3].data_ptr<scalar_t>(), in[4].data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  if (needs_grad({&rq, &rk, &fq, &fk, &v})) {
    std::vector<SavedTensor> saved;
    for (auto& t : in) saved.emplace_back(t, op);
    SavedTensor so(out, op);
    record(op, out, {rq, rk, fq, fk, v}, [=](const Tensor& g_in) {
      Tensor gout = g_in.contiguous();
      std::vector<Tensor> x;
      for (auto& s : saved) x.push_back(s.get());
      std::vector<Tensor> d;
      for (auto& t : x) d.push_back(empty(t.shape(), t.dtype()));
      LD_DISPATCH_FLOAT(gout.dtype(), op, [&] {
        causal_linear_backward<scalar_t>(g, x[0].data_ptr<scalar_t>(), x[1].data_ptr<scalar_t>(), x[2].data_ptr<scalar_t>(),
                                         x[3].data_ptr<scalar_t>(), x[4].data_ptr<scalar_t>(), so.get().data_ptr<scalar_t>(),
                                         gout.data_ptr<scalar_t>(), d[0].data_ptr<scalar_t>(), d[1].data_ptr<scalar_t>(),
                                         d[2].data_ptr<scalar_t>(), d[3].data_ptr<scalar_t>(), d[4].data_ptr<scalar_t>());
      });
      return d;
    });
  }
  return out;
}

Tensor linear_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, const Tensor& cos,
                        const Tensor& sin, RopePairing pairing) {
  check_qkv(q, k, v, "linear_attention");
  LD_CHECK(q.size(-2) == k.size(-2), "linear_attention: q ", shape_str(q.shape()), " and k ", shape_str(k.shape()),
           " need the same length (self-attention)");
  LD_CHECK(cos.defined() == sin.defined(), "linear_attention: give both cos and sin, or neither");
  Tensor fq = add(elu(q), 1.0), fk = add(elu(k), 1.0);  // phi(x) = elu(x) + 1 > 0
  Tensor rq = cos.defined() ? rope(fq, cos, sin, pairing) : fq;
  Tensor rk = cos.defined() ? rope(fk, cos, sin, pairing) : fk;
  if (causal) return causal_linear_attention_core(rq, rk, fq, fk, v);
  // Non-causal: numerator (R phi(q)) (sum_j R phi(k_j) v_j^T), denominator phi(q) . sum_j phi(k_j)
  Tensor num = matmul(rq, matmul(rk.transpose(-1, -2), v));
  Tensor den = sum(mul(fq, sum(fk, {-2}, true)), {-1}, true);
  return div(num, den);
}

}  // namespace liandan
