// Dispatch layout on the GPU (kernels.h): one thread per token. A token counts once per
// rank and once per node, found by looking back over its earlier slots (K is small), so no
// per-token scratch is needed; counts are 64-bit atomics. Same results as the CPU
// get_dispatch_layout, including which entry is reported as the first bad one.
#include <cuda_runtime.h>

#include <vector>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/cuda/kernels.h"

namespace switchyard::dispatch::gpu {

namespace {

using ull = unsigned long long;

__global__ void layout_kernel(const int64_t* __restrict__ topk_idx, int64_t num_tokens, int top_k, int num_experts,
                              int num_ranks, const int32_t* __restrict__ node_of_rank, DeviceLayoutOutputs out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= num_tokens) return;
  const int per_rank = num_experts / num_ranks;
  const int64_t* row = topk_idx + t * top_k;
  for (int k = 0; k < top_k; ++k) {
    const int64_t e = row[k];
    if (e < -1 || e >= num_experts) {
      atomicMin(reinterpret_cast<ull*>(out.error), static_cast<ull>(t * top_k + k));
      continue;
    }
    if (e < 0) continue;
    const int r = static_cast<int>(e / per_rank);
    const int n = node_of_rank[r];
    bool repeated = false, rank_seen = false, node_seen = false;
    for (int j = 0; j < k; ++j) {
      const int64_t f = row[j];
      if (f < 0 || f >= num_experts) continue;
      repeated |= f == e;
      const int fr = static_cast<int>(f / per_rank);
      rank_seen |= fr == r;
      node_seen |= node_of_rank[fr] == n;
    }
    if (repeated) {
      atomicMin(reinterpret_cast<ull*>(out.error), static_cast<ull>(t * top_k + k));
      continue;
    }
    atomicAdd(reinterpret_cast<ull*>(out.num_tokens_per_expert + e), 1ull);
    if (!rank_seen) {
      out.is_token_in_rank[t * num_ranks + r] = 1;
      atomicAdd(reinterpret_cast<ull*>(out.num_tokens_per_rank + r), 1ull);
    }
    if (!node_seen) atomicAdd(reinterpret_cast<ull*>(out.num_tokens_per_node + n), 1ull);
  }
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
  SY_CUDA_CHECK(cudaMemsetAsync(out.num_tokens_per_rank, 0, num_ranks * sizeof(int64_t), stream), "layout: zero counts");
  SY_CUDA_CHECK(cudaMemsetAsync(out.num_tokens_per_node, 0, num_nodes * sizeof(int64_t), stream), "layout: zero counts");
  SY_CUDA_CHECK(cudaMemsetAsync(out.num_tokens_per_expert, 0, num_experts * sizeof(int64_t), stream),
                "layout: zero counts");
  // All ones: "no error" (-1 as int64, the largest value for the unsigned atomicMin).
  SY_CUDA_CHECK(cudaMemsetAsync(out.error, 0xff, sizeof(int64_t), stream), "layout: reset the error slot");
  if (num_tokens == 0) return;
  SY_CUDA_CHECK(cudaMemsetAsync(out.is_token_in_rank, 0, num_tokens * num_ranks, stream), "layout: zero flags");
  const int threads = 128;
  const int64_t blocks = (num_tokens + threads - 1) / threads;
  layout_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(topk_idx, num_tokens, top_k, num_experts,
                                                                        num_ranks, node_of_rank, out);
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
