// The sy-cuda-perf benchmark: the CUDA backend's kernels in one process on one GPU, each
// against cudaMemcpy device-to-device measured in the same run (bytes read plus written).
//
//   memcpy       cudaMemcpyAsync D2D of the BF16 activations [T x H] (the baseline)
//   fp8-cast     gpu::quantize_fp8_tiles of BF16 [T x H] (read 2TH, write TH + 4TS bytes)
//   layout       gpu::launch_dispatch_layout of [T x K] over `ranks` simulated ranks
//   dispatch-*   IntranodeBuffer::dispatch at world size 1 (BF16; every token to itself):
//                "-call" is the wall time of the whole call (layout, copies, host syncs,
//                barriers and allocation), "-kernels" the time in its copy kernels alone
//                (last_kernel_us); bytes = the copy kernels' reads + writes, 2 x row x
//                (T + M + P)
//   combine-*    IntranodeBuffer::combine of the same handle (BF16): read P rows and write
//                M partials, then read M and write T rows; "-call" and "-kernels" as above
//   nccl-*       NcclCommunicator all_reduce and all_to_all_v at world size 1 (a self copy)
// Times are medians of `iters` runs after `warmup` runs (CUDA events, or wall clock for
// calls that synchronize internally). Requires a GPU: throws Unsupported without one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::dispatch::gpu {

struct GpuPerfOptions {
  int64_t num_tokens = 4096;  // T
  int64_t hidden = 7168;      // H
  int num_experts = 64;       // experts of the world-size-1 dispatch (all local)
  int top_k = 8;              // K
  int layout_ranks = 8;       // simulated ranks of the layout benchmark (experts 256)
  int iters = 10;
  int warmup = 2;
  bool nccl = true;           // include the NCCL rows
};

struct GpuPerfRow {
  std::string name;        // "memcpy", "fp8-cast", ...
  double median_us = 0;
  int64_t bytes = 0;       // read + written
  double gbps = 0;         // bytes / median time
  double vs_memcpy = 0;    // gbps / memcpy's gbps (0 for rows without bytes)
};

struct GpuPerfReport {
  GpuPerfOptions options;
  std::string device;      // cuda::device_description
  int nccl_version = 0;
  std::vector<GpuPerfRow> rows;
  std::string text() const;
  std::string json() const;
};

GpuPerfReport run_gpu_perf(const GpuPerfOptions& options);

}  // namespace switchyard::dispatch::gpu
