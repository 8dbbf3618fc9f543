// DeepSeek-V3 sigmoid router on the GPU: scores, group-limited top-k selection and the
// weights (MoeBlock::forward + dispatch::route_group_limited), and the gradient of the
// logits (MoeBlock::route_backward). One warp per token.
//
// Forward, per token (CPU rules, ties to the lower index everywhere):
//   s = sigmoid(logit); b = s + bias
//   group score = first + second of the CPU's scan over the group's b (the two largest)
//   keep the top_groups groups by group score; then K rounds of "best remaining candidate"
//   (b descending, index ascending) = the CPU's partial_sort order
//   w_k = s_k / (s_1 + ... + s_K) * route_scale (the sum in k order), or s_k * route_scale
// Backward, per token (double where the CPU uses double):
//   ds_sel(k) = c (dw_k / S - sum_k dw_k s_k / S^2)   (or c dw_k without normalize)
//   ds_e     += (g f_be - sum_i g f_bi s_i / S') / S'  (balance term, g = coef / (T B))
//   dlogit_e  = (ds_e s_e) (1 - s_e)
#include <climits>
#include <cmath>

#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 32;

__global__ void router_forward_kernel(const float* logits, const float* __restrict__ bias, int64_t n, int E, int K,
                                      int G, int top_groups, float route_scale, bool normalize, float* scores,
                                      int64_t* __restrict__ topk_idx, float* __restrict__ topk_weight,
                                      double* __restrict__ margin) {
  extern __shared__ float smem[];  // per warp: s [E], biased [E]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t t = blockIdx.x * int64_t(kWarpsPerBlock) + warp;
  if (t >= n) return;  // whole warps leave together
  float* s = smem + warp * 2 * E;
  float* b = s + E;
  for (int e = lane; e < E; e += 32) {
    const float x = logits[t * E + e];
    const float sv = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
    s[e] = sv;
    b[e] = __fadd_rn(sv, bias ? bias[e] : 0.0f);
    scores[t * E + e] = sv;
  }
  __syncwarp();

  // Group scores: lane g scans group g exactly as the CPU does.
  const int per_group = E / G;
  float gscore = -INFINITY;
  if (lane < G) {
    const float* bg = b + lane * per_group;
    float first = bg[0], second = 0.0f;
    bool have_second = false;
    for (int i = 1; i < per_group; ++i) {
      if (bg[i] > first) {
        second = first;
        first = bg[i];
      } else if (!have_second || bg[i] > second) {
        second = bg[i];
      }
      have_second = true;
    }
    gscore = have_second ? __fadd_rn(first, second) : first;
  }
  // top_groups rounds of the best remaining group.
  uint32_t kept = 0;
  float last_kept = 0;
  for (int r = 0; r < top_groups; ++r) {
    float v = (lane < G && !((kept >> lane) & 1u)) ? gscore : -INFINITY;
    int i = (lane < G && !((kept >> lane) & 1u)) ? lane : INT_MAX;
    detail::warp_arg_best(v, i);
    kept |= 1u << i;
    last_kept = v;
  }
  double token_margin = INFINITY;
  if (top_groups < G) {
    float v = (lane < G && !((kept >> lane) & 1u)) ? gscore : -INFINITY;
    int i = (lane < G && !((kept >> lane) & 1u)) ? lane : INT_MAX;
    detail::warp_arg_best(v, i);
    token_margin = double(last_kept) - double(v);
  }

  // K rounds of the best remaining candidate expert (in a kept group, not yet chosen).
  // Chosen experts of this lane are marked in a bit mask over its e = lane + 32 j.
  uint32_t chosen = 0;
  int my_choice = -1;  // lane k < K keeps the k-th choice
  float last_v = 0;
  auto best_candidate = [&](float& v, int& i) {
    v = -INFINITY;
    i = INT_MAX;
    for (int j = 0, e = lane; e < E; ++j, e += 32) {
      if (!((kept >> (e / per_group)) & 1u) || ((chosen >> j) & 1u)) continue;
      if (detail::best_first(b[e], e, v, i)) v = b[e], i = e;
    }
    detail::warp_arg_best(v, i);
  };
  for (int k = 0; k < K; ++k) {
    float v;
    int i;
    best_candidate(v, i);
    if (i % 32 == lane) chosen |= 1u << (i / 32);
    if (lane == k) my_choice = i;
    last_v = v;
  }
  if (K < top_groups * per_group) {  // the best candidate left out: the expert cut's margin
    float v;
    int i;
    best_candidate(v, i);
    token_margin = fmin(token_margin, double(last_v) - double(v));
  }

  // Weights: the sum of the selected s in k order, then one division and one product each.
  float sum = 0;
  for (int k = 0; k < K; ++k) sum = __fadd_rn(sum, s[__shfl_sync(detail::kFullMask, my_choice, k)]);
  if (lane < K) {
    float w = s[my_choice];
    if (normalize) w = sum != 0.0f ? __fdiv_rn(w, sum) : 0.0f;
    topk_idx[t * K + lane] = my_choice;
    topk_weight[t * K + lane] = __fmul_rn(w, route_scale);
  }
  if (margin && lane == 0) margin[t] = token_margin;
}

__global__ void router_backward_kernel(const float* __restrict__ scores, const int64_t* __restrict__ topk_idx,
                                       const float* __restrict__ d_weight, int64_t n, int E, int K, double c,
                                       bool normalize, const double* __restrict__ balance_f, int64_t seq_len,
                                       double balance_g, float* __restrict__ dlogits) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t t = blockIdx.x * int64_t(kWarpsPerBlock) + warp;
  if (t >= n) return;
  const float* s = scores + t * E;
  const int64_t* sel = topk_idx + t * K;
  const float* dw = d_weight + t * K;
  // Through the weights: S and the dot over the selected, in k order (every lane alike).
  double S = 0, dot = 0;
  for (int k = 0; k < K; ++k) S += double(s[sel[k]]);
  for (int k = 0; k < K; ++k) dot += double(dw[k]) * double(s[sel[k]]);
  // Balance term: S' = sum_e s_e and sum_e g f_e s_e / S' (warp tree in double).
  const double* f = balance_f ? balance_f + (t / seq_len) * E : nullptr;
  double S2 = 0, dot2 = 0;
  if (f) {
    for (int e = lane; e < E; e += 32) S2 += double(s[e]);
    S2 = detail::warp_sum(S2);
    for (int e = lane; e < E; e += 32) dot2 += balance_g * f[e] * double(s[e]) / S2;
    dot2 = detail::warp_sum(dot2);
  }
  for (int e = lane; e < E; e += 32) {
    float ds = 0.0f;
    for (int k = 0; k < K; ++k) {
      if (sel[k] != e) continue;
      const double v = normalize ? c * (double(dw[k]) / S - dot / (S * S)) : c * double(dw[k]);
      ds = __fadd_rn(ds, float(v));
    }
    if (f) ds = __fadd_rn(ds, float((balance_g * f[e] - dot2) / S2));
    const float se = s[e];
    dlogits[t * E + e] = __fmul_rn(__fmul_rn(ds, se), __fsub_rn(1.0f, se));
  }
}

void check_config(const char* fn, const RouterConfig& c) {
  SY_GPU_REQUIRE(c.num_experts >= 1 && c.num_experts <= kMaxExperts, fn,
                 "num_experts = " << c.num_experts << " must be in [1, " << kMaxExperts << "]");
  SY_GPU_REQUIRE(c.num_groups >= 1 && c.num_groups <= kMaxGroups && c.num_experts % c.num_groups == 0, fn,
                 "num_groups = " << c.num_groups << " must be in [1, " << kMaxGroups << "] and divide num_experts = "
                                 << c.num_experts);
  SY_GPU_REQUIRE(c.top_groups >= 1 && c.top_groups <= c.num_groups, fn,
                 "top_groups = " << c.top_groups << " must be in [1, num_groups = " << c.num_groups << "]");
  const int64_t allowed = c.top_groups * (c.num_experts / c.num_groups);
  SY_GPU_REQUIRE(c.top_k >= 1 && c.top_k <= allowed && c.top_k <= 32, fn,
                 "top_k = " << c.top_k << " must be in [1, min(32, " << allowed << ")]");
}

}  // namespace

void router_forward(const RouterConfig& config, const float* logits, const float* bias, int64_t n, float* scores,
                    int64_t* topk_idx, float* topk_weight, double* margin, cuda::StreamHandle stream) {
  check_config("router_forward", config);
  SY_GPU_REQUIRE(std::isfinite(config.route_scale), "router_forward",
                 "route_scale = " << config.route_scale << " is not finite");
  SY_GPU_REQUIRE_NONNEG("router_forward", n);
  if (n == 0) return;
  const int E = int(config.num_experts);
  const size_t smem = size_t(kWarpsPerBlock) * 2 * E * sizeof(float);
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  router_forward_kernel<<<unsigned(blocks), kWarpsPerBlock * 32, smem, stream>>>(
      logits, bias, n, E, int(config.top_k), int(config.num_groups), int(config.top_groups),
      static_cast<float>(config.route_scale), config.normalize, scores, topk_idx, topk_weight, margin);
  SY_CUDA_CHECK_LAUNCH("gpu::router_forward of " << n << " tokens x " << E << " experts");
}

void router_backward(const RouterConfig& config, const float* scores, const int64_t* topk_idx, const float* d_weight,
                     int64_t n, const double* balance_f, int64_t batch, int64_t seq_len, double balance_coef,
                     float* dlogits, cuda::StreamHandle stream) {
  check_config("router_backward", config);
  SY_GPU_REQUIRE_NONNEG("router_backward", n);
  if (balance_f) {
    SY_GPU_REQUIRE(batch >= 1 && seq_len >= 1 && batch * seq_len == n, "router_backward",
                   "batch = " << batch << " x seq_len = " << seq_len << " must equal n = " << n);
  }
  if (n == 0) return;
  const double g = balance_f ? balance_coef / double(seq_len * batch) : 0.0;
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  router_backward_kernel<<<unsigned(blocks), kWarpsPerBlock * 32, 0, stream>>>(
      scores, topk_idx, d_weight, n, int(config.num_experts), int(config.top_k), config.route_scale,
      config.normalize, balance_f, balance_f ? seq_len : 1, g, dlogits);
  SY_CUDA_CHECK_LAUNCH("gpu::router_backward of " << n << " tokens x " << config.num_experts << " experts");
}

}  // namespace switchyard::trainer::gpu
