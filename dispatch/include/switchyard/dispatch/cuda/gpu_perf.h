// The sy-cuda-perf benchmark: the CUDA backend's kernels in one process on one GPU, each
// against cudaMemcpy device-to-device measured in the same run (bytes read plus written).
//
//   memcpy         cudaMemcpyAsync D2D of the BF16 activations [T x H] (the baseline; the
//                  vs_memcpy column divides by its GB/s); memcpy-large: the same on a copy
//                  the size of expert_x [P x H], for reference (larger copies run faster)
//   fp8-cast       gpu::quantize_fp8_tiles of BF16 [T x H] (read 2TH, write TH + 4TS bytes)
//   layout         gpu::launch_dispatch_layout of [T x K] over `layout_ranks` simulated ranks
//   dispatch-*     IntranodeBuffer::dispatch at world size 1 (every token to itself, M = T,
//                  P = T x K rows): "-kernels" is the time in its copy kernels
//                  (last_kernel_us: send + receive), bytes = what they must move: send
//                  reads T rows and writes M window slots, receive reads M slots and writes
//                  M recv_x rows and P expert rows, so row x (T + 3M + P) (the metadata and
//                  scale bytes are not counted; a row is read once however many copies it
//                  makes). "-layout" is the layout and scan kernels before the send. "-call"
//                  is the wall time of the whole synchronous call: layout and scans, send,
//                  one stream synchronize for the counts, output allocation (cudaMalloc),
//                  receive, final synchronize; freeing the previous result is not timed.
//                  "-call-reuse": the same into the previous result (dispatch(args, out):
//                  no allocation), what a training loop would use.
//                  "@N" rows: the copy kernels with an SM budget of N CTAs (num_sms).
//   combine-*      IntranodeBuffer::combine of the same handle (BF16): the partial kernel
//                  reads P expert rows and writes M slots, the reduce reads M slots and
//                  writes T rows: row x (P + 2M + T); "-call", "-call-reuse" and "@N" as
//                  above (combine at world size 1 synchronizes only at its end)
//   overlap-*      an async dispatch with the default SM budget (24) alone, a compute
//                  stand-in on the other SMs alone (a second stream, sized to take about
//                  as long), and both at once (wall clock); overlap_hidden = (alone +
//                  alone - both) / the shorter alone: 1 = fully hidden, 0 = serialized
//   nccl-*         NcclCommunicator all_reduce and all_to_all_v at world size 1 (a self copy)
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
  // SM budgets (CTAs of the copy kernels) of the "@N" rows; the plain rows use every SM.
  std::vector<int> sm_budgets = {8, 16, 24, 32, 48, 64, 96};
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
  int device_sms = 0;      // SMs of the device
  int default_sms = 0;     // IntranodeOptions::kDefaultNumSms
  double overlap_hidden = 0;  // see overlap-* above
  std::vector<GpuPerfRow> rows;
  std::string text() const;
  std::string json() const;
};

GpuPerfReport run_gpu_perf(const GpuPerfOptions& options);

}  // namespace switchyard::dispatch::gpu
