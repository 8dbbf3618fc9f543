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
// Legend as in buffer.h: R ranks (all on this node, at most 32), E experts, L = E / R local
// experts, T tokens, K top-k slots (at most 32), H hidden, S = ceil(H / 128) scales,
// M received tokens, P expert-major rows.
//
// Memory: one device window per rank, exported once by CUDA IPC at construction:
//   [header: per source, its row count and its per-local-expert counts: R x (1 + L) int64,
//    padded to 256 B]
//   [dispatch slots: R sources x max_tokens_per_rank x slot], slot = [H x 4 B payload]
//     [S x 4 B scales][int32 src_token][int32 expert[max_top_k]][float weight[max_top_k]]
//     [int32 position of the token in the expert's rows at its source[max_top_k]]
//     (each part 16 B aligned)
//   [combine slots: R sources x max_tokens_per_rank x H x 4 B]
//
// Kernels (dispatch/src/cuda/intranode.cu): a sender writes each token once per destination
// rank, one warp per token, 16-byte words, the row read once for all destinations; the
// receiver's one pass copies each received row into recv_x and into every expert-major row
// it belongs to (positions known from the counts and per-expert positions the senders
// wrote), so no receiver-side scan is needed. Combine: one warp per received token sums its
// expert rows into the source's combine slot, one warp per own token sums the slots of the
// ranks it went to.
//
// SM budget: the copy kernels run num_sms CTAs of 1024 threads (one per SM), so the rest of
// the GPU stays free for compute on other streams. The small layout and scan kernels are
// not budgeted (they take a few microseconds).
//
// Ordering between processes uses the host communicator: after a rank's writing kernels
// finish (stream synchronize) it enters a host barrier; a dispatch and a combine each hold
// one barrier in the middle (data visible) and one when the window is free again; the
// second is deferred to the start of the next call when the call is asynchronous (args
// `async`). At world size 1 no barrier is entered, and a combine does not synchronize the
// stream in the middle. Dispatch always waits once for its counts (the outputs are sized by
// them): that is the one host synchronization of an asynchronous dispatch.
//
// Threading: one thread at a time; every rank makes the same sequence of calls (collective).
// Inputs are device pointers of the current device; results own device memory. Errors:
// InvalidArgument for bad input (before any data moves when detectable locally; a bad
// topk_idx is found after the send kernel, and peers then time out in the barrier naming
// this rank), Unsupported without a GPU or when the group spans several nodes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/types.h"
#include "switchyard/common/cuda.h"
#include "switchyard/dispatch/cuda/device_dispatch_outputs.h"

namespace switchyard::dispatch::gpu {

struct IntranodeOptions {
  int num_experts = 0;              // E, divisible by the group size
  int64_t hidden = 0;               // H
  int64_t max_tokens_per_rank = 0;  // dispatch rejects T above this
  int max_top_k = 8;                // dispatch rejects K above this (at most 32)
  // CTAs (of 1024 threads, one per SM) of the dispatch and combine copy kernels; <= 0 means
  // every SM. The default leaves most of an H100/H200's 132 SMs to compute.
  int num_sms = kDefaultNumSms;
  static constexpr int kDefaultNumSms = 24;
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
  int num_sms = 0;     // SM budget of this call: 0 = the buffer's options.num_sms, < 0 = all
  bool async = false;  // return once the receive kernels are enqueued (see result.done)
};

struct DeviceDispatchResult : DeviceDispatchOutputs {
  IntranodeHandle handle;
  // Recorded on args.stream after the last kernel writing the outputs: a compute stream
  // makes its work wait for the outputs with cudaStreamWaitEvent(stream, done->get()). Already
  // complete when the call was not async.
  std::shared_ptr<cuda::Event> done;
};

struct DeviceCombineArgs {
  const void* expert_out = nullptr;                  // [P x H] of dtype (device), expert-major
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16 or kFloat32
  const IntranodeHandle* handle = nullptr;
  const float* weights = nullptr;                    // [M x K] FP32 (device) or nullptr = 1
  cuda::StreamHandle stream = nullptr;
  int num_sms = 0;     // as in DeviceDispatchArgs
  bool async = false;  // as in DeviceDispatchArgs: return once the kernels are enqueued
};

struct DeviceCombineResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  cuda::DeviceBuffer y;               // [T x H] of dtype
  std::shared_ptr<cuda::Event> done;  // recorded after the kernel writing y (as in dispatch)
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
  // SM budget the next call uses when its args say 0 (options.num_sms clamped to the
  // device's SM count).
  int num_sms() const;
  // Microseconds the last dispatch or combine spent in its copy kernels (the send and
  // receive phases, timed with events; the layout and scan kernels, host barriers,
  // allocation and the count read-back excluded). Waits for the last call's kernels.
  double last_kernel_us() const;
  // Microseconds of the last dispatch's layout and position-scan kernels (0 after a combine).
  double last_layout_us() const;

  // Collective. Returns when this rank's outputs are complete (the stream is synchronized),
  // or, with args.async, once the work is enqueued on args.stream: then the outputs are
  // ready when result.done has fired, and the next call (or the destructor) first waits
  // for it and, with several ranks, enters the deferred barrier.
  DeviceDispatchResult dispatch(const DeviceDispatchArgs& args);
  DeviceCombineResult combine(const DeviceCombineArgs& args);
  // The same into a previous result, whose device buffers (and handle, when no other handle
  // shares it) are reused where large enough, so a steady-state loop allocates nothing. The
  // caller must not use `out`'s old contents any more (pending work on them must be ordered
  // before this call on args.stream). After an error `out` holds unspecified contents. For
  // non-FP8 payloads the scale buffers keep whatever they held.
  void dispatch(const DeviceDispatchArgs& args, DeviceDispatchResult& out);
  void combine(const DeviceCombineArgs& args, DeviceCombineResult& out);

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::dispatch::gpu
