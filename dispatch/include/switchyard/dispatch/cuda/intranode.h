// IntranodeBuffer: MoE dispatch and combine on the GPU between the ranks of one node,
// through CUDA IPC pointers (each rank writes straight into its peers' receive windows).
//
// Same semantics and results as dispatch::Buffer (buffer.h) on one node with
// expert_alignment as given: received tokens in canonical order (source rank, source token)
// ascending, the expert-major layout grouped by local expert, and combine summing each
// token's weighted expert rows in FP32 (k ascending on the expert's rank, then ranks
// ascending at the source) with explicitly rounded operations, so the outputs are
// bit-identical to the CPU Buffer's for the same inputs. tests/cuda checks that with several
// processes on one GPU.
//
// Legend as in buffer.h: R ranks (all on this node), E experts, L = E / R local experts,
// T tokens, K top-k slots, H hidden, S = ceil(H / 128) scales, M received tokens, P rows.
//
// Memory: one device window per rank, exported once by CUDA IPC at construction:
//   [int64 count from each source: R, padded to 256 B]
//   [dispatch slots: R sources x max_tokens_per_rank x slot], slot = [H x 4 B payload]
//     [S x 4 B scales][int32 src_token][int32 expert[max_top_k]][float weight[max_top_k]]
//     (each part 16 B aligned)
//   [combine slots: R sources x max_tokens_per_rank x H x 4 B]
// Ordering between processes uses the host communicator: after a rank's writing kernels
// finish (stream synchronize) it enters a host barrier; dispatch and combine each contain
// two barriers (data visible; window free for reuse). This is the correctness path
// (processes sharing one GPU take turns); it is not tuned for speed.
//
// Threading: one thread at a time; every rank makes the same sequence of calls (collective).
// Inputs are device pointers of the current device; results own device memory. Errors:
// InvalidArgument for bad input (before any data moves when detectable locally; a bad
// topk_idx is found after the layout kernel, and peers then time out in the barrier naming
// this rank), Unsupported without a GPU or when the group spans several nodes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/types.h"
#include "switchyard/common/cuda.h"

namespace switchyard::dispatch::gpu {

struct IntranodeOptions {
  int num_experts = 0;              // E, divisible by the group size
  int64_t hidden = 0;               // H
  int64_t max_tokens_per_rank = 0;  // dispatch rejects T above this
  int max_top_k = 8;                // dispatch rejects K above this
};

// Routing of one dispatch, reused by combine (opaque; shared, immutable).
class IntranodeHandle {
 public:
  bool valid() const { return plan_ != nullptr; }
  int64_t num_tokens() const;
  int64_t num_recv_tokens() const;
  struct Plan;
  std::shared_ptr<const Plan> plan_;
};

struct DeviceDispatchArgs {
  const void* x = nullptr;                           // [T x H] of dtype (device)
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16, kFloat32 or kFloat8E4M3
  const float* x_scales = nullptr;                   // [T x S] FP32 (device), FP8 only
  const int64_t* topk_idx = nullptr;                 // [T x K] int64 (device), -1 = masked
  const float* topk_weights = nullptr;               // [T x K] FP32 (device) or nullptr (zeros)
  int64_t num_tokens = 0;                            // T
  int top_k = 0;                                     // K
  int64_t expert_alignment = 1;                      // pad each expert's rows to a multiple
  cuda::StreamHandle stream = nullptr;
};

struct DeviceDispatchResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  int64_t num_recv_tokens = 0;                      // M
  cuda::DeviceBuffer recv_x;                        // [M x H] of dtype
  cuda::DeviceBuffer recv_x_scales;                 // [M x S] FP32 (FP8 only)
  cuda::DeviceBuffer recv_src_rank;                 // [M] int32
  cuda::DeviceBuffer recv_src_token;                // [M] int32
  cuda::DeviceBuffer recv_topk_idx;                 // [M x K] int64, local expert or -1
  cuda::DeviceBuffer recv_topk_weights;             // [M x K] FP32
  std::vector<int64_t> num_recv_tokens_per_expert;  // [L] (host)
  std::vector<int64_t> expert_offsets;              // [L + 1] (host)
  cuda::DeviceBuffer expert_row_token;              // [P] int32, -1 = padding
  cuda::DeviceBuffer expert_row_slot;               // [P] int32, -1 = padding
  cuda::DeviceBuffer expert_x;                      // [P x H] of dtype, padding rows zero
  cuda::DeviceBuffer expert_x_scales;               // [P x S] FP32 (FP8 only)
  IntranodeHandle handle;
};

struct DeviceCombineArgs {
  const void* expert_out = nullptr;                  // [P x H] of dtype (device), expert-major
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16 or kFloat32
  const IntranodeHandle* handle = nullptr;
  const float* weights = nullptr;                    // [M x K] FP32 (device) or nullptr = 1
  cuda::StreamHandle stream = nullptr;
};

struct DeviceCombineResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  cuda::DeviceBuffer y;  // [T x H] of dtype
};

class IntranodeBuffer {
 public:
  // Collective over host (blocking): allocates and exports this rank's window, opens the
  // peers'. Every rank of host must be on this node and use the same options.
  IntranodeBuffer(std::shared_ptr<comm::Communicator> host, const IntranodeOptions& options);
  ~IntranodeBuffer();
  IntranodeBuffer(const IntranodeBuffer&) = delete;
  IntranodeBuffer& operator=(const IntranodeBuffer&) = delete;

  int rank() const;
  int num_ranks() const;
  int num_local_experts() const;
  // Microseconds the last dispatch or combine spent in its kernels (the send and receive
  // phases, timed with events; host barriers, allocation and the count read-back excluded).
  double last_kernel_us() const;

  // Collective; returns when this rank's outputs are complete (the stream is synchronized).
  DeviceDispatchResult dispatch(const DeviceDispatchArgs& args);
  DeviceCombineResult combine(const DeviceCombineArgs& args);

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::dispatch::gpu
