// MoE row permutation (experts.cc make_routing_plan and LocalExperts; MoeBlock's weighted
// combine), deterministic and in the CPU's summation order:
//
//   plan:     counts per expert -> expert_offset (prefix sums) -> order (assignments grouped
//             by expert, increasing assignment a = t K + k within an expert), position = order^-1
//   gather:   x_sorted[r] = x[order[r] / K]
//   gather^T: dx[t] += x_sorted-gradient rows of t, in increasing r (LocalExperts order)
//   combine:  y[t] += sum_k w[t,k] y_sorted[position[t K + k]], k in order (MoeBlock order)
//   combine^T: dy_sorted[position[a]] = w[a] dy[t]; d_weight[a] = <dy[t], y_sorted[position[a]]>
//
// The plan kernels give each expert one thread that scans all assignments in order (through
// shared-memory chunks): O(E n K) compares but no atomics and a stable order by
// construction; cheap at the model's sizes (E <= 256, n K <= 64k) and usable for the
// embedding gradient's grouping by token id (K = 1, E = vocabulary).
#include "kernel_util.cuh"
#include "model_kernels.h"

namespace switchyard::trainer::gpu {

namespace {

constexpr int kPlanThreads = 256;
constexpr int kPlanChunk = 2048;  // assignments staged in shared memory per pass
constexpr int kScanThreads = 1024;
constexpr int kRowThreads = 128;
constexpr int kMaxTopK = 64;

// expert_offset[e + 1] = #{a : idx[a] = e}.
__global__ void plan_count_kernel(const int64_t* __restrict__ idx, int64_t count, int64_t num_experts,
                                  int64_t* __restrict__ expert_offset) {
  __shared__ int64_t chunk[kPlanChunk];
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int64_t c = 0;
  for (int64_t base = 0; base < count; base += kPlanChunk) {
    const int m = int(min(int64_t(kPlanChunk), count - base));
    __syncthreads();
    for (int i = threadIdx.x; i < m; i += blockDim.x) chunk[i] = idx[base + i];
    __syncthreads();
    for (int i = 0; i < m; ++i) c += chunk[i] == e;
  }
  if (e < num_experts) expert_offset[e + 1] = c;
}

// expert_offset[0] = 0 and expert_offset[1..E] = inclusive prefix sums of the counts there.
// One block: each thread scans a contiguous segment (integers, so the order is irrelevant).
__global__ void plan_scan_kernel(int64_t num_experts, int64_t* __restrict__ offset) {
  __shared__ int64_t seg_sum[kScanThreads];
  const int64_t per = (num_experts + kScanThreads - 1) / kScanThreads;
  const int64_t b = 1 + threadIdx.x * per, e = min(num_experts + 1, b + per);
  int64_t s = 0;
  for (int64_t i = b; i < e; ++i) s += offset[i];
  seg_sum[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int i = 0; i < kScanThreads; ++i) {
      const int64_t v = seg_sum[i];
      seg_sum[i] = run;
      run += v;
    }
    offset[0] = 0;
  }
  __syncthreads();
  int64_t run = seg_sum[threadIdx.x];
  for (int64_t i = b; i < e; ++i) {
    run += offset[i];
    offset[i] = run;
  }
}

// Thread e writes the assignments of expert e in increasing a from expert_offset[e].
__global__ void plan_fill_kernel(const int64_t* __restrict__ idx, int64_t count, int64_t num_experts,
                                 const int64_t* __restrict__ expert_offset, int64_t* __restrict__ order,
                                 int64_t* __restrict__ position) {
  __shared__ int64_t chunk[kPlanChunk];
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int64_t pos = e < num_experts ? expert_offset[e] : 0;
  for (int64_t base = 0; base < count; base += kPlanChunk) {
    const int m = int(min(int64_t(kPlanChunk), count - base));
    __syncthreads();
    for (int i = threadIdx.x; i < m; i += blockDim.x) chunk[i] = idx[base + i];
    __syncthreads();
    if (e >= num_experts) continue;
    for (int i = 0; i < m; ++i) {
      if (chunk[i] != e) continue;
      order[pos] = base + i;
      if (position) position[base + i] = pos;
      ++pos;
    }
  }
}

__global__ void gather_kernel(const float* __restrict__ x, const int64_t* __restrict__ order, int64_t top_k,
                              int64_t d, float* __restrict__ x_sorted) {
  const int64_t r = blockIdx.x;
  const float* src = x + (order[r] / top_k) * d;
  float* dst = x_sorted + r * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

// Loads the K plan rows of token t into rows[] (shared), sorted increasing when `sorted`.
__device__ void load_token_rows(const int64_t* position, int64_t t, int top_k, bool sorted, int64_t* rows) {
  if (threadIdx.x == 0) {
    for (int k = 0; k < top_k; ++k) rows[k] = position[t * top_k + k];
    if (sorted) {
      for (int k = 1; k < top_k; ++k) {  // insertion sort, K is small
        const int64_t v = rows[k];
        int i = k - 1;
        while (i >= 0 && rows[i] > v) rows[i + 1] = rows[i], --i;
        rows[i + 1] = v;
      }
    }
  }
  __syncthreads();
}

__global__ void gather_backward_kernel(const float* __restrict__ dx_sorted, const int64_t* __restrict__ position,
                                       int top_k, int64_t d, float* __restrict__ dx) {
  __shared__ int64_t rows[kMaxTopK];
  const int64_t t = blockIdx.x;
  load_token_rows(position, t, top_k, /*sorted=*/true, rows);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = dx[t * d + j];
    for (int k = 0; k < top_k; ++k) acc += dx_sorted[rows[k] * d + j];
    dx[t * d + j] = acc;
  }
}

__global__ void combine_kernel(const float* __restrict__ y_sorted, const float* __restrict__ w,
                               const int64_t* __restrict__ position, int top_k, int64_t d, float* __restrict__ y) {
  __shared__ int64_t rows[kMaxTopK];
  const int64_t t = blockIdx.x;
  load_token_rows(position, t, top_k, /*sorted=*/false, rows);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = y[t * d + j];
    for (int k = 0; k < top_k; ++k) acc = __fadd_rn(acc, __fmul_rn(w[t * top_k + k], y_sorted[rows[k] * d + j]));
    y[t * d + j] = acc;
  }
}

__global__ void combine_backward_kernel(const float* __restrict__ dy, const float* __restrict__ y_sorted,
                                        const float* __restrict__ w, const int64_t* __restrict__ position, int top_k,
                                        int64_t d, float* __restrict__ dy_sorted, float* __restrict__ d_weight) {
  __shared__ int64_t rows[kMaxTopK];
  const int64_t t = blockIdx.x;
  load_token_rows(position, t, top_k, /*sorted=*/false, rows);
  const float* g = dy + t * d;
  for (int k = 0; k < top_k; ++k) {
    const float wk = w[t * top_k + k];
    const float* o = y_sorted + rows[k] * d;
    float* dst = dy_sorted + rows[k] * d;
    float dot = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      dot += g[j] * o[j];
      dst[j] = __fmul_rn(wk, g[j]);
    }
    dot = detail::block_sum(dot);
    if (threadIdx.x == 0) d_weight[t * top_k + k] = dot;
  }
}

void check_rows(const char* fn, int64_t n, int64_t top_k, int64_t d) {
  SY_GPU_REQUIRE_NONNEG(fn, n);
  SY_GPU_REQUIRE(top_k >= 1 && top_k <= kMaxTopK, fn, "top_k = " << top_k << " must be in [1, " << kMaxTopK << "]");
  SY_GPU_REQUIRE_NONNEG(fn, d);
  SY_GPU_REQUIRE(n * top_k < (int64_t{1} << 31), fn, "n * top_k = " << n * top_k << " rows is too many for one grid");
}

}  // namespace

void moe_routing_plan(const int64_t* topk_idx, int64_t n, int64_t top_k, int64_t num_experts, int64_t* expert_offset,
                      int64_t* order, int64_t* position, cuda::StreamHandle stream) {
  SY_GPU_REQUIRE_NONNEG("moe_routing_plan", n);
  SY_GPU_REQUIRE(top_k >= 1, "moe_routing_plan", "top_k = " << top_k << " must be >= 1");
  SY_GPU_REQUIRE(num_experts >= 1 && num_experts < (int64_t{1} << 31), "moe_routing_plan",
                 "num_experts = " << num_experts << " must be in [1, 2^31)");
  const int64_t count = n * top_k;
  const unsigned blocks = unsigned((num_experts + kPlanThreads - 1) / kPlanThreads);
  plan_count_kernel<<<blocks, kPlanThreads, 0, stream>>>(topk_idx, count, num_experts, expert_offset);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_routing_plan count, " << count << " assignments, " << num_experts << " experts");
  plan_scan_kernel<<<1, kScanThreads, 0, stream>>>(num_experts, expert_offset);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_routing_plan scan");
  if (count == 0) return;
  plan_fill_kernel<<<blocks, kPlanThreads, 0, stream>>>(topk_idx, count, num_experts, expert_offset, order, position);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_routing_plan fill");
}

void moe_gather(const float* x, const int64_t* order, int64_t n, int64_t top_k, int64_t d, float* x_sorted,
                cuda::StreamHandle stream) {
  check_rows("moe_gather", n, top_k, d);
  if (n == 0 || d == 0) return;
  gather_kernel<<<unsigned(n * top_k), kRowThreads, 0, stream>>>(x, order, top_k, d, x_sorted);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_gather of " << n * top_k << " x " << d);
}

void moe_gather_backward(const float* dx_sorted, const int64_t* position, int64_t n, int64_t top_k, int64_t d,
                         float* dx, cuda::StreamHandle stream) {
  check_rows("moe_gather_backward", n, top_k, d);
  if (n == 0 || d == 0) return;
  gather_backward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(dx_sorted, position, int(top_k), d, dx);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_gather_backward of " << n << " x " << d);
}

void moe_combine(const float* y_sorted, const float* topk_weight, const int64_t* position, int64_t n, int64_t top_k,
                 int64_t d, float* y, cuda::StreamHandle stream) {
  check_rows("moe_combine", n, top_k, d);
  if (n == 0 || d == 0) return;
  combine_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(y_sorted, topk_weight, position, int(top_k), d, y);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_combine of " << n << " x " << d);
}

void moe_combine_backward(const float* dy, const float* y_sorted, const float* topk_weight, const int64_t* position,
                          int64_t n, int64_t top_k, int64_t d, float* dy_sorted, float* d_weight,
                          cuda::StreamHandle stream) {
  check_rows("moe_combine_backward", n, top_k, d);
  if (n == 0) return;
  combine_backward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(dy, y_sorted, topk_weight, position, int(top_k), d,
                                                                   dy_sorted, d_weight);
  SY_CUDA_CHECK_LAUNCH("gpu::moe_combine_backward of " << n << " x " << d);
}

}  // namespace switchyard::trainer::gpu
