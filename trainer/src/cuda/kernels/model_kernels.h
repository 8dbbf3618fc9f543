// Device kernels of the DeepSeek-V3 model on one GPU (internal to sy_trainer): everything
// the model computes on activations besides the GEMMs (gpu::gemm, cuda/gemm.h), and the
// optimizer step. Each function is the device twin of a CPU function of trainer/src
// (kernels.h, router.cc, experts.cc, mla.cc, moe.cc, model.cc, train/optimizer.cc) and
// follows its formulas, layouts and tie rules; the comment of each names it.
//
// Conventions:
// - Pointers are device memory; tensors are FP32 row-major [rows, cols] like the CPU model
//   (BF16 tensors are uint16_t bits, int64 indices). Shapes are in the comments.
// - Work is enqueued on `stream` (nullptr = legacy default stream); nothing blocks the host.
//   No function synchronises, so outputs are ready when the stream reaches them.
// - Sizes are checked on the host: a bad size throws InvalidArgument naming the argument;
//   zero rows is a no-op. Values on the device (token ids, expert indices) are NOT checked:
//   the caller validates them on the host (the CPU model checks tokens in stage_begin).
// - Deterministic: no floating-point atomics; repeated calls give identical bits. Sums
//   follow the CPU's order where the comment says "CPU order" (bitwise equal results for
//   equal inputs); other reductions are tree reductions (FP32 rounding differences only).
// - Scratch: the functions marked "scratch" allocate temporaries with cudaMallocAsync /
//   cudaFreeAsync on `stream` (stream-ordered, from the device's memory pool).
// - No fast-math: products and sums are rounded as in the CPU's FP32 code (no contraction
//   into FMA where the comment says "CPU order"); expf/logf are CUDA's (within 2 ulp).
// Threading: stateless, callable from any thread with the device current.
#pragma once

#include <cstdint>

#include "switchyard/common/cuda.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::gpu {

// ---------------------------------------------------------------------------------------
// Element-wise helpers
// ---------------------------------------------------------------------------------------

// x[n] = 0.
void fill_zero(float* x, int64_t n, cuda::StreamHandle stream);
// y[n] += x[n] (residual connections: DecoderLayer::forward's h_mid += h_in).
void add_inplace(float* y, const float* x, int64_t n, cuda::StreamHandle stream);
// y[n] = a[n] + b[n] (y may alias a or b).
void add(const float* a, const float* b, int64_t n, float* y, cuda::StreamHandle stream);
// x[n] *= s (gradient clipping: clip_grad_norm's g *= scale, computed in FP32).
void scale_inplace(float* x, int64_t n, float s, cuda::StreamHandle stream);
// dst[r, 0:cols] = src[r, 0:cols] for r < rows; rows of src have stride ld_src, of dst
// ld_dst (the MTP concatenation [enorm(e), hnorm(h)] and its split in model.cc).
void copy_rows(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst,
               cuda::StreamHandle stream);
// y[n] = bf16(x[n]), round to nearest even; NaN stays NaN (dispatch::bf16_from_float bits).
void cast_to_bf16(const float* x, int64_t n, uint16_t* y, cuda::StreamHandle stream);
// y[n] = float(x[n]) for BF16 bits x (exact: the bits shifted left by 16).
void cast_from_bf16(const uint16_t* x, int64_t n, float* y, cuda::StreamHandle stream);
// out[0] = sum_i double(x[i])^2 in double (clip_grad_norm's sum; tree order). Scratch.
void sum_squares(const float* x, int64_t n, double* out, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// Embedding (model.cc embed_forward / run_embed_backward)
// ---------------------------------------------------------------------------------------

// out[n, d] = table[ids[n], :]; table [V, d]; ids [n] int64 in [0, V).
void embedding_forward(const float* table, const int64_t* ids, int64_t n, int64_t d, float* out,
                       cuda::StreamHandle stream);
// dtable[v, :] += dout[t, :] for every token t with ids[t] == v, added in increasing t (CPU
// order). order [n] / offset [V + 1] group the tokens by id: moe_routing_plan(ids, n, 1, V)
// below, or the CPU's make_routing_plan(ids, n, 1, V) uploaded. dout [n, d]; dtable [V, d].
void embedding_backward(const float* dout, const int64_t* order, const int64_t* offset, int64_t vocab, int64_t d,
                        float* dtable, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// RMSNorm (kernels::rmsnorm_*): r = 1 / sqrt(mean(x^2) + eps) per row, eps rounded to FP32
// ---------------------------------------------------------------------------------------

// y[i, j] = w[j] * (x[i, j] * r_i). x [n, c] with row stride ldx >= c, y row stride ldy >= c,
// w [c]; rstd [n] (optional, may be null) gets r_i. One block per row.
void rmsnorm_forward(const float* x, int64_t ldx, const float* w, int64_t n, int64_t c, double eps, float* y,
                     int64_t ldy, float* rstd, cuda::StreamHandle stream);
// dx[i, j] (= or += when accumulate) r w[j] dy[i, j] - x[i, j] r^3 mean_j(x w dy).
// x stride ldx, dy [n, c] stride lddy, dx stride lddx (each >= c); r recomputed from x.
void rmsnorm_backward_input(const float* x, int64_t ldx, const float* w, const float* dy, int64_t lddy, int64_t n,
                            int64_t c, double eps, float* dx, int64_t lddx, bool accumulate, cuda::StreamHandle stream);
// dw[j] += sum_i dy[i, j] x[i, j] r_i (sum over rows in fixed chunks, then chunks in order).
// Scratch.
void rmsnorm_backward_weight(const float* x, int64_t ldx, const float* dy, int64_t lddy, int64_t n, int64_t c,
                             double eps, float* dw, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// Interleaved RoPE (kernels::rope_apply) on strided sub-vectors
// ---------------------------------------------------------------------------------------

// For row r < rows and head h < heads, the dr = 2 * half values at
//   in + r * ld_in + h * head_stride_in   ->   out + r * ld_out + h * head_stride_out
// rotate pairs (2i, 2i+1) by the angle of position p = r % seq_len:
//   out[2i] = x0 c - x1 s, out[2i+1] = x0 s + x1 c, c = cos[p, i], s = +-sin[p, i]
// (minus when inverse: the backward). cos/sin [seq_len, half] FP32: make_rope_table's
// double tables rounded to float (as the CPU's T(c[i])). in == out (in place) is allowed.
// Uses in mla.cc: q_pe in place (ld = H*dqk, head_stride = dqk, offset dn), k_pe out of
// place (heads = 1), and the inverse on dq_pe and dk_pe.
void rope_apply(const float* cos, const float* sin, int64_t seq_len, int64_t half, const float* in, int64_t ld_in,
                int64_t head_stride_in, float* out, int64_t ld_out, int64_t head_stride_out, int64_t rows,
                int64_t heads, bool inverse, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// SwiGLU (kernels::swiglu_*)
// ---------------------------------------------------------------------------------------

// sig = sigmoid(a), g = a * sig * b. a, b [rows, cols] with row stride ld_ab (a and b may be
// the two halves of one [rows, 2F] GEMM output: b = a + F, ld_ab = 2F); g, sig [rows, cols]
// contiguous. The CPU's flat form is rows = 1, cols = ld_ab = n.
void swiglu_forward(const float* a, const float* b, int64_t ld_ab, int64_t rows, int64_t cols, float* g, float* sig,
                    cuda::StreamHandle stream);
// da = dg b sig (1 + a (1 - sig)), db = dg a sig. a, b stride ld_ab; sig, dg [rows, cols];
// da, db [rows, cols] with row stride ld_dab (halves of one buffer like a, b).
void swiglu_backward(const float* a, const float* b, int64_t ld_ab, const float* sig, const float* dg, int64_t rows,
                     int64_t cols, float* da, float* db, int64_t ld_dab, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// Causal MLA attention (Mla::forward / backward_input's attention part), d_qk != d_v
// ---------------------------------------------------------------------------------------

struct AttentionShape {
  int64_t batch = 0, seq_len = 0, heads = 0;
  int64_t d_nope = 0, d_rope = 0, d_v = 0;  // d_qk = d_nope + d_rope
  double scale = 0;                         // ModelConfig::softmax_scale(), used as FP32
};

// Per sequence b and head h, with N = batch * seq_len token rows (row = b * seq_len + t):
//   q    [N, H * d_qk]          head h: [q_nope (d_nope) | q_pe (d_rope, already roped)]
//   kv   [N, H * (d_nope+d_v)]  head h: [k_nope (d_nope) | v (d_v)]  (kv_b_proj output)
//   k_pe [N, d_rope]            one roped key shared by all heads
//   S = scale (q_nope k_nope^T + q_pe k_pe^T), causal (key j <= query i), P = softmax(S),
//   o    [N, H * d_v]           o = P v
//   lse  [batch, H, seq_len]    the softmax statistics m + log(sum exp(S - m)) per query.
// FlashAttention-style: P is never stored (the CPU keeps it); the backward recomputes it
// from lse. Online softmax, so sums run in a different order than the CPU's.
// Limits: d_qk and d_v multiples of 4 and at most 256 (V3: 192 and 128).
void attention_forward(const AttentionShape& shape, const float* q, const float* kv, const float* k_pe, float* o,
                       float* lse, cuda::StreamHandle stream);
// From d_o [N, H * d_v] and the forward's q, kv, k_pe, o, lse: sets
//   dq    [N, H * d_qk]           dS k (nope part from k_nope, rope part from k_pe)
//   dkv   [N, H * (d_nope+d_v)]   [dS^T q_nope | P^T d_o] per head
//   dk_pe [N, d_rope]             sum over heads of dS^T q_pe (heads summed in order 0..H-1)
// with dS = P (dP - rowsum(d_o * o)) scale, dP = d_o v^T (rowsum(d_o * o) = rowsum(dP * P),
// the CPU's `dot`). The RoPE inverse on dq's rope part and dk_pe is the caller's
// (rope_apply, inverse), as in mla.cc. Two passes (dK/dV per key tile, dQ per query tile),
// no atomics. Scratch.
void attention_backward(const AttentionShape& shape, const float* q, const float* kv, const float* k_pe,
                        const float* o, const float* lse, const float* d_o, float* dq, float* dkv, float* dk_pe,
                        cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// Router (MoeBlock::forward's scores and route_group_limited; MoeBlock::route_backward)
// ---------------------------------------------------------------------------------------

// scores [n, E] = sigmoid(logits [n, E]) (scores may alias logits); selection over
// biased = scores + bias [E] (FP32; null = zeros) exactly as dispatch::route_group_limited: group score = sum of
// the two largest biased scores of the group (its first/second scan), the top_groups groups
// by group score (ties: lower group), then top_k experts among them by biased score (ties:
// lower expert). topk_idx [n, K] in that order; topk_weight [n, K] = s / sum(selected s, in
// k order) * route_scale (or s * route_scale without normalize), CPU order.
// margin [n] (optional, double): the token's smallest decision margin (route.cc's gap:
// group cut, then expert cut; +inf when nothing is cut). Requires num_groups <= 32 and
// num_experts <= 1024. Non-finite scores are not detected (the CPU throws).
void router_forward(const RouterConfig& config, const float* logits, const float* bias, int64_t n, float* scores,
                    int64_t* topk_idx, float* topk_weight, double* margin, cuda::StreamHandle stream);
// dlogits [n, E] = ds * s (1 - s), with ds from d topk_weight [n, K] through the weights
// (normalize: ds_k = c (dw_k / S - sum_k(dw_k s_k) / S^2), S over the selected, in double)
// plus, when balance_f is not null, the balance loss term of route_backward:
// ds_e += (g_e - sum_i g_i s_i / S') / S' with g_e = balance_coef f[b, e] / (seq_len batch),
// S' = sum_e s_e (double), b = token / seq_len. scores [n, E] the forward's;
// balance_f [batch, E] double from balance_loss_forward.
void router_backward(const RouterConfig& config, const float* scores, const int64_t* topk_idx, const float* d_weight,
                     int64_t n, const double* balance_f, int64_t batch, int64_t seq_len, double balance_coef,
                     float* dlogits, cuda::StreamHandle stream);

// Sequence-wise balance loss (MoeBlock::forward, trainer/configs/README.md), on the
// unbiased scores [batch * seq_len, E]:
//   f[b, e] = E / (K T) #{t in b : e in plain top-K of s_t} (ties: lower expert, plain_topk)
//   P[b, e] = (1/T) sum_t s_te / sum_j s_tj;  loss[0] = sum_b sum_e f P / batch  (double,
// CPU order). f [batch, E] double (for router_backward); loss [1] double. margin [n]
// (optional, in/out): min'ed with the plain top-K margin s_(K) - s_(K+1) (MoeBlock's
// min_margin). Scratch.
void balance_loss_forward(const float* scores, int64_t batch, int64_t seq_len, int64_t num_experts, int64_t top_k,
                          double* f, double* loss, double* margin, cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// MoE row permutation (experts.cc make_routing_plan / LocalExperts, MoeBlock's combine)
// ---------------------------------------------------------------------------------------

// The routing plan of make_routing_plan on the device: assignment a = t * K + k goes to
// expert topk_idx[a]; expert_offset [E + 1] (int64, prefix sums of the counts), order
// [n * K] the assignments grouped by expert, in increasing a within an expert (stable);
// position [n * K] (optional) its inverse: order[position[a]] = a. Counts are
// expert_offset differences (copy E + 1 values to the host for per-expert GEMM sizes).
void moe_routing_plan(const int64_t* topk_idx, int64_t n, int64_t top_k, int64_t num_experts, int64_t* expert_offset,
                      int64_t* order, int64_t* position, cuda::StreamHandle stream);
// x_sorted[r, :] = x[order[r] / K, :] for r < n * K (LocalExperts::forward's gather).
// x [n, d]; x_sorted [n * K, d].
void moe_gather(const float* x, const int64_t* order, int64_t n, int64_t top_k, int64_t d, float* x_sorted,
                cuda::StreamHandle stream);
// Backward of moe_gather: dx[t, :] += dx_sorted[r, :] over the token's K rows r in
// increasing r (CPU order of LocalExperts::backward_input). dx_sorted [n * K, d]; dx [n, d].
void moe_gather_backward(const float* dx_sorted, const int64_t* position, int64_t n, int64_t top_k, int64_t d,
                         float* dx, cuda::StreamHandle stream);
// y[t, :] += w[t, k] y_sorted[position[t K + k], :] for k = 0..K-1 in order (MoeBlock's
// combine, CPU order). y_sorted [n * K, d] expert outputs in plan order; w [n, K]; y [n, d]
// already holding the shared expert's output (or zeros).
void moe_combine(const float* y_sorted, const float* topk_weight, const int64_t* position, int64_t n, int64_t top_k,
                 int64_t d, float* y, cuda::StreamHandle stream);
// Backward of moe_combine (MoeBlock::backward_per_assignment, in plan order):
// dy_sorted[position[a], :] = w[a] dy[t, :] and d_weight[a] = <dy[t, :], y_sorted[position[a], :]>
// for a = t K + k. dy [n, d]; dy_sorted [n * K, d]; d_weight [n, K].
void moe_combine_backward(const float* dy, const float* y_sorted, const float* topk_weight, const int64_t* position,
                          int64_t n, int64_t top_k, int64_t d, float* dy_sorted, float* d_weight,
                          cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy (kernels::cross_entropy_*)
// ---------------------------------------------------------------------------------------

// probs [n, V] = softmax(logits [n, V]) (probs may alias logits); loss[0] (double) = mean over
// rows of log(sum exp(z - max)) + max - z[target] (per-row terms in double, summed in a
// fixed tree order). targets [n] int64 in [0, V). One block per row. Scratch.
void cross_entropy_forward(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* probs,
                           double* loss, cuda::StreamHandle stream);
// In place: probs becomes dlogits = k (probs - onehot(target)) with k = float(scale / n)
// (CPU order: p *= k, then p[target] -= k).
void cross_entropy_backward(float* probs, const int64_t* targets, int64_t n, int64_t vocab, double scale,
                            cuda::StreamHandle stream);

// ---------------------------------------------------------------------------------------
// AdamW (train/optimizer.cc AdamW::step), FP32 weights and gradients, BF16 moments
// ---------------------------------------------------------------------------------------

// The step's FP32 constants, computed on the host exactly as AdamW::step does.
struct AdamWStep {
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0;
  float c1 = 0, c2 = 0;  // 1 / (1 - beta^t), computed in double then rounded
  float decay = 0;       // lr * weight_decay (applied to matrices only)
};
// step: the step number t after incrementing (1 for the first update).
AdamWStep adamw_step_constants(const AdamWConfig& config, int64_t step, double lr);
// Per element (CPU order, bitwise equal to AdamW::step):
//   m = bf16(b1 m + (1 - b1) g); v = bf16(b2 v + (1 - b2) g g)
//   w = w - lr (m c1) / (sqrt(v c2) + eps) - (apply_decay ? decay : 0) w
// w, g [n] FP32; m, v [n] BF16 bits. Call once per parameter (or per run of parameters
// with the same apply_decay: matrices true, norm weights false).
void adamw_update(float* w, const float* g, uint16_t* m, uint16_t* v, int64_t n, const AdamWStep& step,
                  bool apply_decay, cuda::StreamHandle stream);

}  // namespace switchyard::trainer::gpu
