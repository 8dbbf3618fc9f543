// CPU kernels: OpenBLAS GEMMs and fused element-wise passes (see kernels.h).
#include "kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "switchyard/trainer/train/linear_backend.h"

namespace switchyard::trainer::kernels {

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
              ldb, beta, C, ldc);
}

template <class T>
void linear_forward(const T* x, const T* W, int64_t n, int64_t in, int64_t out, T* y) {
  // An installed back-end (the FP8 recipe, linear_backend.h) may compute it instead.
  if constexpr (std::is_same_v<T, float>)
    if (LinearBackend* b = linear_backend(); b && b->forward(x, W, n, in, out, y)) return;
  gemm<T>(false, true, n, out, in, T(1), x, in, W, in, T(0), y, out);
}

template <class T>
void linear_backward_input(const T* dy, const T* W, int64_t n, int64_t in, int64_t out, T* dx, bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    if (LinearBackend* b = linear_backend(); b && b->backward_input(dy, W, n, in, out, dx, accumulate)) return;
  gemm<T>(false, false, n, in, out, T(1), dy, out, W, in, accumulate ? T(1) : T(0), dx, in);
}

template <class T>
void linear_backward_weight(const T* dy, const T* x, int64_t n, int64_t in, int64_t out, T* dW) {
  if constexpr (std::is_same_v<T, float>)
    if (LinearBackend* b = linear_backend(); b && b->backward_weight(dy, x, n, in, out, dW)) return;
  if (n == 0) return;
  gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dW, in);
}

template <class T>
static T row_rstd(const T* x, int64_t c, double eps) {
  T ss = 0;
  for (int64_t j = 0; j < c; ++j) ss += x[j] * x[j];
  return T(1) / std::sqrt(ss / T(c) + T(eps));
}

template <class T>
void rmsnorm_forward(const T* x, int64_t ldx, const T* w, int64_t n, int64_t c, double eps, T* y, T* rstd) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * ldx;
    T r = row_rstd(xi, c, eps);
    T* yi = y + i * c;
    for (int64_t j = 0; j < c; ++j) yi[j] = w[j] * (xi[j] * r);
    if (rstd) rstd[i] = r;
  }
}

template <class T>
void rmsnorm_backward_input(const T* x, int64_t ldx, const T* w, const T* dy, int64_t n, int64_t c, double eps, T* dx,
                            int64_t lddx, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * ldx;
    const T* dyi = dy + i * c;
    T* dxi = dx + i * lddx;
    T r = row_rstd(xi, c, eps);
    T dot = 0;
    for (int64_t j = 0; j < c; ++j) dot += xi[j] * w[j] * dyi[j];
    T k = r * r * r * dot / T(c);
    if (accumulate) {
      for (int64_t j = 0; j < c; ++j) dxi[j] += r * w[j] * dyi[j] - xi[j] * k;
    } else {
      for (int64_t j = 0; j < c; ++j) dxi[j] = r * w[j] * dyi[j] - xi[j] * k;
    }
  }
}

template <class T>
void rmsnorm_backward_weight(const T* x, int64_t ldx, const T* dy, int64_t n, int64_t c, double eps, T* dw) {
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + i * ldx;
    const T* dyi = dy + i * c;
    T r = row_rstd(xi, c, eps);
    for (int64_t j = 0; j < c; ++j) dw[j] += dyi[j] * xi[j] * r;
  }
}

RopeTable make_rope_table(int64_t seq_len, int64_t rope_dim, double theta, bool yarn, double factor,
                          int64_t original_max_pos, double beta_fast, double beta_slow, double mscale,
                          double mscale_all_dim) {
  RopeTable t;
  t.seq_len = seq_len;
  t.half = rope_dim / 2;
  std::vector<double> freq(t.half);
  for (int64_t i = 0; i < t.half; ++i) freq[i] = std::pow(theta, -2.0 * i / rope_dim);
  double attention_factor = 1.0;
  if (yarn) {
    // YaRN (HF yarn_find_correction_range): blend interpolated and extrapolated frequencies.
    auto corr = [&](double rot) {
      return rope_dim * std::log(original_max_pos / (rot * 2 * M_PI)) / (2 * std::log(theta));
    };
    double low = std::max(std::floor(corr(beta_fast)), 0.0);
    double high = std::min(std::ceil(corr(beta_slow)), double(rope_dim - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < t.half; ++i) {
      double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      freq[i] = freq[i] * (1 - ramp) + (freq[i] / factor) * ramp;
    }
    auto get_mscale = [&](double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; };
    attention_factor = get_mscale(mscale) / get_mscale(mscale_all_dim);
  }
  t.cos.resize(seq_len * t.half);
  t.sin.resize(seq_len * t.half);
  for (int64_t p = 0; p < seq_len; ++p) {
    for (int64_t i = 0; i < t.half; ++i) {
      t.cos[p * t.half + i] = std::cos(p * freq[i]) * attention_factor;
      t.sin[p * t.half + i] = std::sin(p * freq[i]) * attention_factor;
    }
  }
  return t;
}

template <class T>
void rope_apply(const RopeTable& table, int64_t pos, const T* in, T* out, bool inverse) {
  const double* c = table.cos.data() + pos * table.half;
  const double* s = table.sin.data() + pos * table.half;
  for (int64_t i = 0; i < table.half; ++i) {
    T x0 = in[2 * i], x1 = in[2 * i + 1];
    T ci = T(c[i]), si = inverse ? T(-s[i]) : T(s[i]);
    out[2 * i] = x0 * ci - x1 * si;
    out[2 * i + 1] = x0 * si + x1 * ci;
  }
}

template <class T>
void swiglu_forward(const T* a, const T* b, int64_t n, T* g, T* sig) {
  for (int64_t i = 0; i < n; ++i) sig[i] = T(1) / (T(1) + std::exp(-a[i]));
  for (int64_t i = 0; i < n; ++i) g[i] = a[i] * sig[i] * b[i];
}

template <class T>
void swiglu_backward(const T* a, const T* b, const T* sig, const T* dg, int64_t n, T* da, T* db) {
  for (int64_t i = 0; i < n; ++i) {
    T s = sig[i];
    da[i] = dg[i] * b[i] * s * (T(1) + a[i] * (T(1) - s));
    db[i] = dg[i] * a[i] * s;
  }
}

template <class T>
double cross_entropy_forward(const T* logits, const int64_t* targets, int64_t n, int64_t V, T* probs) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* z = logits + i * V;
    T* p = probs + i * V;
    T mx = *std::max_element(z, z + V);
    T sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += (p[v] = std::exp(z[v] - mx));
    const T inv = T(1) / sum;
    for (int64_t v = 0; v < V; ++v) p[v] *= inv;
    total += std::log(double(sum)) + double(mx) - double(z[targets[i]]);
  }
  return total / n;
}

template <class T>
void cross_entropy_backward(T* probs, const int64_t* targets, int64_t n, int64_t V, double scale) {
  const T k = T(scale / n);
  for (int64_t i = 0; i < n; ++i) {
    T* p = probs + i * V;
    for (int64_t v = 0; v < V; ++v) p[v] *= k;
    p[targets[i]] -= k;
  }
}

#define SY_INSTANTIATE(T)                                                                                            \
  template void linear_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);                             \
  template void linear_backward_input<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, bool);                \
  template void linear_backward_weight<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);                     \
  template void rmsnorm_forward<T>(const T*, int64_t, const T*, int64_t, int64_t, double, T*, T*);                 \
  template void rmsnorm_backward_input<T>(const T*, int64_t, const T*, const T*, int64_t, int64_t, double, T*,     \
                                          int64_t, bool);                                                         \
  template void rmsnorm_backward_weight<T>(const T*, int64_t, const T*, int64_t, int64_t, double, T*);             \
  template void rope_apply<T>(const RopeTable&, int64_t, const T*, T*, bool);                                      \
  template void swiglu_forward<T>(const T*, const T*, int64_t, T*, T*);                                            \
  template void swiglu_backward<T>(const T*, const T*, const T*, const T*, int64_t, T*, T*);                       \
  template double cross_entropy_forward<T>(const T*, const int64_t*, int64_t, int64_t, T*);                     \
  template void cross_entropy_backward<T>(T*, const int64_t*, int64_t, int64_t, double);
SY_INSTANTIATE(float)
SY_INSTANTIATE(double)
#undef SY_INSTANTIATE

}  // namespace switchyard::trainer::kernels
