// StagedBuffer: MoE dispatch and combine of device tensors over an EP group that spans
// several nodes, staged through host memory and carried by the CPU Buffer (buffer.h): the
// node-limited two-hop exchange over UCX between nodes and shared memory inside a node.
//
// This is the inter-node GPU path for machines whose GPUs have no GPU-initiated network
// access (no InfiniBand GPUDirect, no NVSHMEM): every call copies its device inputs to
// host memory, runs the CPU Buffer's collective, and copies the results back to freshly
// allocated device buffers. Results are therefore bit-identical to dispatch::Buffer's for
// the same inputs (the same code computes them); the cost is two PCIe crossings per call.
// Ranks of one node that only talk to each other should use IntranodeBuffer (CUDA IPC).
//
// Legend as in buffer.h: T tokens, K top-k, H hidden, S = ceil(H / 128) scales, M received
// tokens, L local experts, P expert-major rows.
//
// Threading: one thread at a time; every rank makes the same sequence of calls (collective,
// as Buffer). Inputs are device pointers of the current device, read after `stream`'s
// earlier work (the call synchronizes the stream); outputs own device memory and are
// complete when the call returns. Errors: those of Buffer (InvalidArgument for bad input,
// Timeout / PeerFailure naming a peer), Unsupported without a GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/cuda.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/cuda/device_dispatch_outputs.h"

namespace switchyard::dispatch::gpu {

struct StagedDispatchArgs {
  const void* x = nullptr;                           // [T x H] of dtype (device)
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16, kFloat32 or kFloat8E4M3
  const float* x_scales = nullptr;                   // [T x S] FP32 (device), FP8 only
  const int64_t* topk_idx = nullptr;                 // [T x K] int64 (device), -1 = masked
  const float* topk_weights = nullptr;               // [T x K] FP32 (device) or nullptr
  int64_t num_tokens = 0;                            // T
  int top_k = 0;                                     // K
  int64_t expert_alignment = 1;
  const Handle* cached_handle = nullptr;             // reuse a handle's routing
  cuda::StreamHandle stream = nullptr;
};

// Device copies of DispatchResult's tensors; the routing handle on the host.
struct StagedDispatchResult : DeviceDispatchOutputs {
  Handle handle;                                    // for combine and the backwards
  TrafficStats stats;
};

struct StagedCombineResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  cuda::DeviceBuffer y;  // [T x H] of dtype
  TrafficStats stats;
};

struct StagedCombineBackwardResult {
  cuda::DeviceBuffer grad_expert_out;    // [P x H] of dtype
  cuda::DeviceBuffer grad_topk_weights;  // [T x K] FP32 at the source
  TrafficStats stats;
};

class StagedBuffer {
 public:
  // Collective over comm (blocking), as Buffer's constructor.
  StagedBuffer(std::shared_ptr<comm::Communicator> comm, const BufferOptions& options);
  ~StagedBuffer();
  StagedBuffer(const StagedBuffer&) = delete;
  StagedBuffer& operator=(const StagedBuffer&) = delete;

  Buffer& host() { return *host_; }  // the CPU Buffer that carries the data
  int num_local_experts() const { return host_->num_local_experts(); }

  StagedDispatchResult dispatch(const StagedDispatchArgs& args);
  // expert_out [P x H] of dtype (kBfloat16 or kFloat32, device), weights [M x K] FP32
  // (device) or nullptr = 1 -> y [T x H].
  StagedCombineResult combine(const void* expert_out, comm::DataType dtype, const Handle& handle,
                              const float* weights, cuda::StreamHandle stream);
  // Backward of dispatch: grad_expert_x [P x H] -> dx [T x H] (unit-weight combine).
  StagedCombineResult dispatch_backward(const void* grad_expert_x, comm::DataType dtype, const Handle& handle,
                                        cuda::StreamHandle stream);
  // Backward of combine: grad_y [T x H], the forward's expert_out [P x H] and weights [M x K].
  StagedCombineBackwardResult combine_backward(const void* grad_y, comm::DataType dtype, const Handle& handle,
                                               const void* expert_out, const float* weights,
                                               cuda::StreamHandle stream);

 private:
  std::unique_ptr<Buffer> host_;
};

}  // namespace switchyard::dispatch::gpu
