// Sequence-wise balance loss of DeepSeek-V3 (MoeBlock::forward; trainer/configs/README.md)
// on the unbiased sigmoid scores s [B*T, E], in double like the CPU:
//   f[b, e] = E / (K T) #{t in b : e in the plain top-K of s_t}   (ties: lower expert)
//   P[b, e] = sum_t s_te / S_t / T,  S_t = sum_j s_tj
//   loss    = sum_b sum_e f[b, e] P[b, e] / B
// Three passes with the CPU's summation orders where they matter for double results:
//   1. one warp per token: S_t (warp tree in double) and the plain top-K (K rounds of the best
//      remaining expert), plus its margin s_(K) - s_(K+1)
//   2. one thread per (sequence, expert): f and P summed over t in order (CPU order)
//   3. one thread: the loss summed over b, then e (CPU order)
#include <climits>

#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxExperts = 1024;
constexpr int kMaxTopK = 32;
constexpr int kExpertThreads = 128;

__global__ void balance_token_kernel(const float* __restrict__ scores, int64_t n, int E, int K,
                                     double* __restrict__ row_sum, int* __restrict__ top, double* __restrict__ margin) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t t = blockIdx.x * int64_t(kWarpsPerBlock) + warp;
  if (t >= n) return;
  const float* s = scores + t * E;
  double sum = 0;
  for (int e = lane; e < E; e += 32) sum += double(s[e]);
  sum = detail::warp_sum(sum);
  if (lane == 0) row_sum[t] = sum;
  uint32_t chosen = 0;  // bit j: expert lane + 32 j taken
  float last_v = 0;
  for (int k = 0; k <= K && k < E; ++k) {
    float v = -INFINITY;
    int i = INT_MAX;
    for (int j = 0, e = lane; e < E; ++j, e += 32)
      if (!((chosen >> j) & 1u) && detail::best_first(s[e], e, v, i)) v = s[e], i = e;
    detail::warp_arg_best(v, i);
    if (k == K) {  // the (K+1)-th best: the plain top-K's margin
      if (margin && lane == 0) margin[t] = fmin(margin[t], double(last_v) - double(v));
      break;
    }
    if (i % 32 == lane) chosen |= 1u << (i / 32);
    if (lane == 0) top[t * K + k] = i;
    last_v = v;
  }
}

__global__ void balance_expert_kernel(const float* __restrict__ scores, const double* __restrict__ row_sum,
                                      const int* __restrict__ top, int64_t seq_len, int E, int K,
                                      double* __restrict__ f, double* __restrict__ P) {
  const int64_t b = blockIdx.y;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= E) return;
  const double hit = double(E) / double(int64_t(K) * seq_len);
  double fe = 0, pe = 0;
  for (int64_t t = b * seq_len; t < (b + 1) * seq_len; ++t) {
    for (int k = 0; k < K; ++k)
      if (top[t * K + k] == e) fe += hit;
    pe += double(scores[t * E + e]) / row_sum[t] / double(seq_len);
  }
  f[b * E + e] = fe;
  P[b * E + e] = pe;
}

__global__ void balance_sum_kernel(const double* __restrict__ f, const double* __restrict__ P, int64_t batch, int E,
                                   double* __restrict__ loss) {
  double l = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int e = 0; e < E; ++e) l = __dadd_rn(l, __ddiv_rn(__dmul_rn(f[b * E + e], P[b * E + e]), double(batch)));
  loss[0] = l;
}

}  // namespace

void balance_loss_forward(const float* scores, int64_t batch, int64_t seq_len, int64_t num_experts, int64_t top_k,
                          double* f, double* loss, double* margin, cuda::StreamHandle stream) {
  const char* fn = "balance_loss_forward";
  SY_GPU_REQUIRE(batch >= 1 && batch < 65536, fn, "batch = " << batch << " must be in [1, 65536)");
  SY_GPU_REQUIRE(seq_len >= 1, fn, "seq_len = " << seq_len << " must be >= 1");
  SY_GPU_REQUIRE(num_experts >= 1 && num_experts <= kMaxExperts, fn,
                 "num_experts = " << num_experts << " must be in [1, " << kMaxExperts << "]");
  SY_GPU_REQUIRE(top_k >= 1 && top_k <= num_experts && top_k <= kMaxTopK, fn,
                 "top_k = " << top_k << " must be in [1, min(" << kMaxTopK << ", num_experts)]");
  const int64_t n = batch * seq_len;
  const int E = int(num_experts), K = int(top_k);
  detail::StreamScratch row_sum(size_t(n) * sizeof(double), stream, "gpu::balance_loss_forward");
  detail::StreamScratch top(size_t(n * K) * sizeof(int), stream, "gpu::balance_loss_forward");
  detail::StreamScratch P(size_t(batch * E) * sizeof(double), stream, "gpu::balance_loss_forward");
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  balance_token_kernel<<<unsigned(blocks), kWarpsPerBlock * 32, 0, stream>>>(scores, n, E, K, row_sum.as<double>(),
                                                                            top.as<int>(), margin);
  SY_CUDA_CHECK_LAUNCH("gpu::balance_loss_forward top-k of " << n << " tokens");
  const dim3 grid(unsigned((E + kExpertThreads - 1) / kExpertThreads), unsigned(batch));
  balance_expert_kernel<<<grid, kExpertThreads, 0, stream>>>(scores, row_sum.as<double>(), top.as<int>(), seq_len, E,
                                                             K, f, P.as<double>());
  SY_CUDA_CHECK_LAUNCH("gpu::balance_loss_forward f and P of " << batch << " sequences");
  balance_sum_kernel<<<1, 1, 0, stream>>>(f, P.as<double>(), batch, E, loss);
  SY_CUDA_CHECK_LAUNCH("gpu::balance_loss_forward loss");
}

}  // namespace switchyard::trainer::gpu
