// LowLatencyBuffer: the low-latency (decode) dispatch and combine on the GPU between the
// ranks of one node through CUDA IPC, the GPU form of Buffer's low-latency mode (buffer.h).
//
// Fixed-size receive slots: every rank owns, per local expert, R x max_tokens row slots;
// senders claim a contiguous block per (destination, expert) with one atomic add on the
// destination's counter and write each (token, expert) row straight into it, so there is
// no layout pass on the receiver and no count exchange. BF16 input is cast to FP8 E4M3
// with 1x128 scales inside the send kernel (use_fp8), bit-identical to quantize_fp8_tiles.
// Output (a view into this rank's window): rows [0, count[j]) of local expert j, one block
// per source rank (tokens ascending inside a block), blocks in the order the sources
// claimed them, with src_rank/src_token per row: the CPU low-latency mode's layout.
// combine(expert_out [L x slots x H] BF16 in the view's layout) weights and sums the local
// experts per (token, source) on the expert side (top-k order, FP32), writes one BF16 row per
// (token, rank) into the source's window, and the source sums the ranks in rank order
// (FP32): y [T x H] BF16, bit-identical to Buffer::low_latency_combine.
//
// Legend: R ranks (this node, at most 32), E experts, L = E / R, T <= max_tokens tokens,
// K <= kLowLatencyMaxTopK (16) top-k slots, H hidden (a multiple of 4 for FP8), S =
// ceil(H / 128), slots = R x max_tokens.
//
// Ordering between processes: host barriers after the stream synchronizes, as in
// IntranodeBuffer (right for processes taking turns on one GPU): a dispatch resets this
// rank's counters and enters a barrier before any claim (several ranks), and one after its
// sends; a combine one after the expert side and one at the end. Every call is synchronous
// and collective; the view stays valid until the next dispatch, y until the next combine.
// SM budget: the send and combine kernels run num_sms CTAs of 1024 threads.
//
// Errors: InvalidArgument for bad sizes and for a topk_idx entry out of range or repeated
// in its row (found after the send kernel, as in IntranodeBuffer: peers then time out in the
// barrier); Unsupported without a GPU or across nodes. Threading: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/types.h"
#include "switchyard/common/cuda.h"

namespace switchyard::dispatch::gpu {

struct LowLatencyOptions {
  int num_experts = 0;     // E, divisible by the group size
  int64_t hidden = 0;      // H
  int64_t max_tokens = 0;  // tokens per rank and call
  int num_sms = 24;        // CTAs of the copy kernels (<= 0: every SM)
};

struct DeviceLowLatencyArgs {
  const uint16_t* x = nullptr;          // [T x H] BF16 bits (device)
  const int64_t* topk_idx = nullptr;    // [T x K] int64 (device), -1 = masked
  const float* topk_weights = nullptr;  // [T x K] FP32 (device) applied by combine; nullptr = 1
  int64_t num_tokens = 0;               // T <= max_tokens
  int top_k = 0;                        // K <= 16
  bool use_fp8 = true;                  // cast to E4M3 with 1x128 scales inside the send kernel
  bool pow2_scales = false;             // power-of-two scales
  cuda::StreamHandle stream = nullptr;
  int num_sms = 0;  // 0 = options.num_sms, < 0 = every SM
};

// Views into this rank's window (device pointers), valid until the next dispatch.
struct DeviceLowLatencyView {
  comm::DataType dtype = comm::DataType::kFloat8E4M3;
  int64_t slots_per_expert = 0;      // R x max_tokens
  const uint8_t* x = nullptr;        // [L x slots x H] of dtype; rows [0, count[j]) of expert j
  const float* scales = nullptr;     // [L x slots x S] (FP8 only)
  const int32_t* src_rank = nullptr;   // [L x slots]
  const int32_t* src_token = nullptr;  // [L x slots]
  std::vector<int32_t> count;          // [L] rows per local expert (host copy)
};

// Synchronous copy of `bytes` from device memory (e.g. a view's pointer) to host memory,
// for callers that include no CUDA header (tests, debugging).
void copy_device_to_host(void* dst, const void* device_src, size_t bytes);

class LowLatencyBuffer {
 public:
  // Collective over host (blocking): allocates and exports this rank's window.
  LowLatencyBuffer(std::shared_ptr<comm::Communicator> host, const LowLatencyOptions& options);
  ~LowLatencyBuffer();
  LowLatencyBuffer(const LowLatencyBuffer&) = delete;
  LowLatencyBuffer& operator=(const LowLatencyBuffer&) = delete;

  int num_local_experts() const;
  DeviceLowLatencyView dispatch(const DeviceLowLatencyArgs& args);
  // expert_out [L x slots x H] BF16 (device) -> y [T x H] BF16 (device, buffer-owned), T of
  // the last dispatch. Synchronous on `stream`.
  const uint16_t* combine(const uint16_t* expert_out, cuda::StreamHandle stream = nullptr, int num_sms = 0);

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::dispatch::gpu
