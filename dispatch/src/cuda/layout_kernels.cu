// Dispatch layout on the GPU (kernels.h): one thread per token. A token counts once per
// rank and once per node, found by looking back over its earlier slots (K is small), so no
// per-token scratch is needed. Counts go to per-block shared-memory counters first and then
// one 64-bit atomic per counter and block (a global atomic per token and slot on the few
// rank counters serialized in L2). Same results as the CPU get_dispatch_layout, including
// which entry is reported as the first bad one.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"

namespace switchyard::dispatch::gpu {

namespace {

using ull = unsigned long long;

__global__ void layout_kernel(const int64_t* __restrict__ topk_idx, int64_t num_tokens, int top_k, int num_experts,
                              int num_ranks, const int32_t* __restrict__ node_of_rank, int num_nodes,
                              DeviceLayoutOutputs out) {
  extern __shared__ unsigned int s_count[];  // [E experts][R ranks][N nodes]
  unsigned int* s_expert = s_count;
  unsigned int* s_rank = s_count + num_experts;
  unsigned int* s_node = s_rank + num_ranks;
  const int counters = num_experts + num_ranks + num_nodes;
  for (int i = threadIdx.x; i < counters; i += blockDim.x) s_count[i] = 0;
  __syncthreads();
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < num_tokens) {
    for (int r = 0; r < num_ranks; ++r) out.is_token_in_rank[t * num_ranks + r] = 0;  // this thread's row
    // 32-bit arithmetic after the range check (64-bit division is emulated on the GPU).
    const int per_rank = num_experts / num_ranks;
    const int64_t* row = topk_idx + t * top_k;
    for (int k = 0; k < top_k; ++k) {
      const int64_t e64 = row[k];
      if (e64 < -1 || e64 >= num_experts) {
        atomicMin(reinterpret_cast<ull*>(out.error), static_cast<ull>(t * top_k + k));
        continue;
      }
      if (e64 < 0) continue;
      const int e = static_cast<int>(e64);
      const int r = e / per_rank;
      const int n = node_of_rank[r];
      bool repeated = false, rank_seen = false, node_seen = false;
      for (int j = 0; j < k; ++j) {
        const int64_t f64 = row[j];
        if (f64 < 0 || f64 >= num_experts) continue;
        const int f = static_cast<int>(f64);
        repeated |= f == e;
        const int fr = f / per_rank;
        rank_seen |= fr == r;
        node_seen |= node_of_rank[fr] == n;
      }
      if (repeated) {
        atomicMin(reinterpret_cast<ull*>(out.error), static_cast<ull>(t * top_k + k));
        continue;
      }
      atomicAdd(s_expert + e, 1u);
      if (!rank_seen) {
        out.is_token_in_rank[t * num_ranks + r] = 1;
        atomicAdd(s_rank + r, 1u);
      }
      if (!node_seen) atomicAdd(s_node + n, 1u);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < counters; i += blockDim.x) {
    if (s_count[i] == 0) continue;
    int64_t* dst = i < num_experts                ? out.num_tokens_per_expert + i
                   : i < num_experts + num_ranks ? out.num_tokens_per_rank + (i - num_experts)
                                                 : out.num_tokens_per_node + (i - num_experts - num_ranks);
    atomicAdd(reinterpret_cast<ull*>(dst), static_cast<ull>(s_count[i]));
  }
}

// Zeroes the counters and resets the error slot (one launch instead of four memsets: the
// layout is on every dispatch's critical path, where each launch costs microseconds).
__global__ void layout_reset_kernel(DeviceLayoutOutputs out, int num_experts, int num_ranks, int num_nodes) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < num_experts) out.num_tokens_per_expert[i] = 0;
  if (i < num_ranks) out.num_tokens_per_rank[i] = 0;
  if (i < num_nodes) out.num_tokens_per_node[i] = 0;
  if (i == 0) *out.error = -1;  // "no error": the largest value for the unsigned atomicMin
}

}  // namespace

void launch_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts, int num_ranks,
                            const int32_t* node_of_rank, int num_nodes, const DeviceLayoutOutputs& out,
                            cuda::StreamHandle stream) {
  SY_REQUIRE(num_ranks >= 1 && num_experts > 0 && num_experts % num_ranks == 0,
             "gpu dispatch layout: num_experts = " << num_experts << " is not a positive multiple of the " << num_ranks
                                                   << " ranks");
  SY_REQUIRE(num_tokens >= 0, "gpu dispatch layout: num_tokens = " << num_tokens << " is negative");
  SY_REQUIRE(top_k >= 1, "gpu dispatch layout: top_k = " << top_k << " must be >= 1");
  SY_REQUIRE(num_nodes >= 1, "gpu dispatch layout: num_nodes = " << num_nodes << " must be >= 1");
  const int counters = std::max(num_experts, std::max(num_ranks, num_nodes));
  layout_reset_kernel<<<(counters + 255) / 256, 256, 0, stream>>>(out, num_experts, num_ranks, num_nodes);
  SY_CUDA_CHECK_LAUNCH("gpu dispatch layout: reset the counters");
  if (num_tokens == 0) return;
  const int threads = 256;
  const int64_t blocks = (num_tokens + threads - 1) / threads;
  const size_t smem = static_cast<size_t>(num_experts + num_ranks + num_nodes) * sizeof(unsigned int);
  SY_REQUIRE(smem <= 48 * 1024, "gpu dispatch layout: " << num_experts << " experts and " << num_ranks
                                                        << " ranks need more than 48 KiB of counters");
  SY_REQUIRE(blocks < (int64_t{1} << 31), "gpu dispatch layout: " << num_tokens << " tokens is too many");
  layout_kernel<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(topk_idx, num_tokens, top_k, num_experts,
                                                                           num_ranks, node_of_rank, num_nodes, out);
  SY_CUDA_CHECK_LAUNCH("gpu dispatch layout of " << num_tokens << " tokens");
}

DispatchLayout get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts,
                                   const topology::RankMap& rank_map, cuda::StreamHandle stream) {
  const int R = rank_map.size(), N = rank_map.num_nodes();
  std::vector<int32_t> node_of(R);
  for (int r = 0; r < R; ++r) node_of[r] = rank_map.node_of(r);
  cuda::DeviceBuffer d_node(R * sizeof(int32_t)), d_rank(R * sizeof(int64_t)), d_nodes(N * sizeof(int64_t)),
      d_expert(static_cast<size_t>(num_experts > 0 ? num_experts : 1) * sizeof(int64_t)),
      d_in(static_cast<size_t>(num_tokens > 0 ? num_tokens : 1) * R), d_err(sizeof(int64_t));
  d_node.copy_from_host(node_of.data(), node_of.size() * sizeof(int32_t));
  DeviceLayoutOutputs out;
  out.num_tokens_per_rank = d_rank.as<int64_t>();
  out.num_tokens_per_node = d_nodes.as<int64_t>();
  out.num_tokens_per_expert = d_expert.as<int64_t>();
  out.is_token_in_rank = d_in.as<uint8_t>();
  out.error = d_err.as<int64_t>();
  launch_dispatch_layout(topk_idx, num_tokens, top_k, num_experts, R, d_node.as<int32_t>(), N, out, stream);
  SY_CUDA_CHECK(cudaStreamSynchronize(stream), "gpu dispatch layout");
  int64_t err = 0;
  d_err.copy_to_host(&err, sizeof(err));
  if (err != -1) {
    const int64_t t = err / top_k, k = err % top_k;
    int64_t value = 0;
    SY_CUDA_CHECK(cudaMemcpy(&value, topk_idx + err, sizeof(value), cudaMemcpyDeviceToHost), "layout: read bad entry");
    if (value < -1 || value >= num_experts)
      SY_THROW(InvalidArgument, "dispatch: topk_idx[" << t << "][" << k << "] = " << value << " is out of range [-1, "
                                                      << num_experts << ")");
    SY_THROW(InvalidArgument, "dispatch: token " << t << " selects expert " << value << " twice (slot " << k << ")");
  }
  DispatchLayout l;
  l.num_tokens = num_tokens;
  l.top_k = top_k;
  l.num_tokens_per_rank.resize(R);
  l.num_tokens_per_node.resize(N);
  l.num_tokens_per_expert.resize(num_experts);
  l.is_token_in_rank.resize(num_tokens * R);
  d_rank.copy_to_host(l.num_tokens_per_rank.data(), R * sizeof(int64_t));
  d_nodes.copy_to_host(l.num_tokens_per_node.data(), N * sizeof(int64_t));
  d_expert.copy_to_host(l.num_tokens_per_expert.data(), num_experts * sizeof(int64_t));
  d_in.copy_to_host(l.is_token_in_rank.data(), l.is_token_in_rank.size());
  return l;
}

}  // namespace switchyard::dispatch::gpu
