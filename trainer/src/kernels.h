// CPU kernels of the model (internal): a GEMM wrapper over OpenBLAS and the fused
// element-wise passes (RMSNorm, interleaved RoPE, SwiGLU, softmax cross-entropy).
//
// Layout: activations are row-major [rows, cols]; Linear weights are [out, in] as in HF.
// T is float or double. All functions are synchronous; GEMMs use OpenBLAS threads.
#pragma once

#include <cstdint>
#include <vector>

namespace switchyard::trainer::kernels {

// C[M,N] = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X^T when trans_x.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// y[n, out] = x[n, in] * W[out, in]^T.
template <class T>
void linear_forward(const T* x, const T* W, int64_t n, int64_t in, int64_t out, T* y);
// dx[n, in] (= or +=) dy[n, out] * W[out, in].
template <class T>
void linear_backward_input(const T* dy, const T* W, int64_t n, int64_t in, int64_t out, T* dx, bool accumulate);
// dW[out, in] += dy[n, out]^T * x[n, in].
template <class T>
void linear_backward_weight(const T* dy, const T* x, int64_t n, int64_t in, int64_t out, T* dW);

// y[n, c] = w[c] * x / sqrt(mean(x^2) + eps); rstd[n] (optional) gets 1/sqrt(mean(x^2)+eps).
// x rows have stride ldx (>= c) so a slice of a wider row can be normalised in place of a copy.
template <class T>
void rmsnorm_forward(const T* x, int64_t ldx, const T* w, int64_t n, int64_t c, double eps, T* y, T* rstd);
// dx[n, c] (= or +=) w*r*dy - x*r^3*mean(x*w*dy); dx rows have stride lddx.
template <class T>
void rmsnorm_backward_input(const T* x, int64_t ldx, const T* w, const T* dy, int64_t n, int64_t c, double eps, T* dx,
                            int64_t lddx, bool accumulate);
// dw[c] += sum_n dy * x * r.
template <class T>
void rmsnorm_backward_weight(const T* x, int64_t ldx, const T* dy, int64_t n, int64_t c, double eps, T* dw);

// Rotary tables for positions 0..T-1 and dr/2 frequencies: cos/sin [T, dr/2] (YaRN folded in).
struct RopeTable {
  std::vector<double> cos, sin;
  int64_t seq_len = 0, half = 0;
};
RopeTable make_rope_table(int64_t seq_len, int64_t rope_dim, double theta, bool yarn, double factor,
                          int64_t original_max_pos, double beta_fast, double beta_slow, double mscale,
                          double mscale_all_dim);
// Rotates interleaved pairs (2i, 2i+1) of v[dr] by the angle of position pos; inverse
// rotates by minus the angle (the backward).
template <class T>
void rope_apply(const RopeTable& table, int64_t pos, const T* in, T* out, bool inverse);

// g = silu(a) * b over n elements; sig = sigmoid(a) kept for the backward.
template <class T>
void swiglu_forward(const T* a, const T* b, int64_t n, T* g, T* sig);
// da = dg * b * silu'(a), db = dg * silu(a), with sig = sigmoid(a) from the forward.
template <class T>
void swiglu_backward(const T* a, const T* b, const T* sig, const T* dg, int64_t n, T* da, T* db);

// Mean cross-entropy of logits[n, V] against targets[n] (accumulated in double);
// probs[n, V] gets softmax(logits) for the backward (one exp per element in all).
template <class T>
double cross_entropy_forward(const T* logits, const int64_t* targets, int64_t n, int64_t V, T* probs);
// In place: probs[n, V] becomes dlogits = scale * (probs - onehot) / n.
template <class T>
void cross_entropy_backward(T* probs, const int64_t* targets, int64_t n, int64_t V, double scale);

}  // namespace switchyard::trainer::kernels
