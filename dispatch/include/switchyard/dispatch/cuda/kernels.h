// CUDA kernels of dispatch that stand alone: the FP8 E4M3 per-1x128 cast and the dispatch
// layout. Each has the CPU function of the same name as its reference (fp8.h, layout.h) and
// gives bit-identical results (tests/cuda compares them bit for bit).
//
// Pointers are device pointers on the current device; the work is enqueued on `stream`
// (nullptr = the legacy default stream). No CUDA header is needed to call these. In a build
// without CUDA they throw Unsupported.
#pragma once

#include <cstdint>

#include "switchyard/common/cuda.h"
#include "switchyard/dispatch/layout.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::dispatch::gpu {

// x [rows x cols] FP32 (or BF16 bits) -> q [rows x cols] E4M3 codes and
// scales [rows x ceil(cols / 128)] FP32, exactly as dispatch::quantize_fp8_tiles.
// One warp per 1x128 tile. Asynchronous on `stream`.
void quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q, float* scales,
                        cuda::StreamHandle stream);
void quantize_fp8_tiles(const uint16_t* x_bf16, int64_t rows, int64_t cols, bool pow2_scale, uint8_t* q,
                        float* scales, cuda::StreamHandle stream);

// Device-side layout outputs (all device memory, written by launch_dispatch_layout):
struct DeviceLayoutOutputs {
  int64_t* num_tokens_per_rank = nullptr;    // [R], zeroed by the launch
  int64_t* num_tokens_per_node = nullptr;    // [N], zeroed by the launch
  int64_t* num_tokens_per_expert = nullptr;  // [E], zeroed by the launch
  uint8_t* is_token_in_rank = nullptr;       // [T x R]
  // [1] flat index t * K + k of the first bad entry (out of range, or an expert repeated in
  // the row), -1 when none; reset by the launch.
  int64_t* error = nullptr;
};

// topk_idx [T x K] int64 (device) -> the layout of dispatch::get_dispatch_layout, with
// node_of_rank [R] int32 (device, dense node ids as RankMap::node_of). One thread per token.
// Asynchronous; check `error` after the stream finished (get_dispatch_layout does).
void launch_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts, int num_ranks,
                            const int32_t* node_of_rank, int num_nodes, const DeviceLayoutOutputs& out,
                            cuda::StreamHandle stream);

// Convenience for tests and host callers: runs the layout kernel on a device topk_idx and
// returns the host DispatchLayout (synchronizes `stream`). Throws InvalidArgument naming the
// first bad token like the CPU version (the CPU message names the slot value as well).
DispatchLayout get_dispatch_layout(const int64_t* topk_idx, int64_t num_tokens, int top_k, int num_experts,
                                   const topology::RankMap& rank_map, cuda::StreamHandle stream);

}  // namespace switchyard::dispatch::gpu
