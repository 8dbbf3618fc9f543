// Buffer: MoE token dispatch and combine over an expert-parallel (EP) group.
//
// Legend: R ranks in the EP group, N nodes, E experts (expert e on rank e / (E / R)),
// L = E / R local experts, T tokens on this rank, K top-k slots, H hidden channels,
// S = ceil(H / 128) FP8 scales per token, M = received tokens, P = expert-major rows.
//
// dispatch(x, scales?, topk_idx, topk_weights) sends each token to every rank that holds at
// least one of its experts, ONCE per rank (-1 slots are skipped). With several nodes and
// two_hop, a token crosses the network at most once per destination node: to its rail peer
// there (same local index), which forwards it to the ranks of that node. The received tokens
// come in a canonical order, (source rank, source token) ascending, whatever the path.
// It also returns the expert-major layout: one row per (received token, local expert) pair,
// grouped by local expert, each group padded to a multiple of expert_alignment rows.
//
// combine(expert_out, handle, weights) multiplies each expert-major row by its gate weight,
// sums per token on the rank, then per node (two-hop: on the forwarder), then across nodes
// at the source, accumulating in FP32 in a fixed order (bitwise reproducible for a given
// layout and path), and returns [T x H] in the input type. Partial sums travel in the input
// type (BF16 or FP32).
//
// Backward: dispatch_backward = combine with unit weights on the same handle;
// combine_backward = a cached dispatch of dy plus the local products, and it returns the
// gradient of the (received) top-k weights, <dy[t], out_k>, reduced back to the source.
//
// Threading and ownership: a Buffer is used by one thread at a time, and every rank of the
// group must make the same sequence of calls (they are collective). Input pointers are
// borrowed for the duration of the call (until wait() for the async forms); results own
// their memory. Async forms run the exchange on a helper thread; do not use the Buffer or
// its communicator for anything else until wait() returned. Errors: InvalidArgument for bad
// input (checked before any data moves when detectable locally), Timeout naming a peer when
// a peer does not answer (e.g. it rejected its own input).
//
// Memory: receive staging is sized for the group's largest max_tokens_per_rank rows per peer
// and reused between calls (the row count rides in each message, so every stage is one round trip).
// Rows between ranks of one node go through a shared-memory window opened at construction
// (when every rank has room for it in /dev/shm; SWITCHYARD_DISPATCH_SHM_ROWS=0 turns it
// off): senders write rows and partial sums straight into the receiver's window
// (docs/dispatch.md, "Shared-memory rows").
//
// CPU backend: host pointers. The `stream` fields are reserved for the CUDA backend.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <vector>

#include "switchyard/comm/types.h"
#include "switchyard/dispatch/layout.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch {

struct BufferOptions {
  int num_experts = 0;              // E, divisible by the group size
  int64_t hidden = 0;               // H
  int64_t max_tokens_per_rank = 0;  // dispatch/combine reject T above this
  bool two_hop = true;              // node-limited two-hop when the group spans > 1 node
  // Low-latency mode (low_latency.h) slot count per (source rank, local expert); 0 = off.
  int64_t low_latency_max_tokens = 0;
};

// Bytes moved by one call on this rank. logical: rows this rank delivers to final
// destinations, self included (DeepEP's counting); wire: bytes this rank put on the network
// (to ranks on other nodes), payload rows only; control: count headers.
struct TrafficStats {
  int64_t logical_bytes = 0;
  int64_t wire_bytes = 0;
  int64_t control_bytes = 0;
  int64_t row_bytes = 0;  // bytes of one dispatched row (payload + scales + metadata)
};

// Everything a later combine, backward or cached dispatch needs. Opaque to callers except
// the read-only accessors; copyable (shared, immutable).
class Handle {
 public:
  bool valid() const { return plan_ != nullptr; }
  int64_t num_tokens() const;         // T on this rank
  int64_t num_recv_tokens() const;    // M
  int64_t num_expert_rows() const;    // P (with padding)
  int top_k() const;
  bool two_hop() const;
  struct Plan;
  std::shared_ptr<const Plan> plan_;
};

struct DispatchArgs {
  const void* x = nullptr;                 // [T x H] of dtype
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16 (uint16 bits), kFloat32, kFloat8E4M3
  const float* x_scales = nullptr;         // [T x S] float, FP8 only
  const int64_t* topk_idx = nullptr;       // [T x K] int64, -1 = masked (ignored with a cached handle)
  const float* topk_weights = nullptr;     // [T x K] float or nullptr (received as zeros)
  int64_t num_tokens = 0;                  // T
  int top_k = 0;                           // K
  int64_t expert_alignment = 1;            // pad each local expert's rows to a multiple of this
  const Handle* cached_handle = nullptr;   // reuse a handle's routing: no layout, no counts
  bool expert_major_x = true;              // fill DispatchResult::expert_x (+ scales)
  bool recv_x = true;                      // fill DispatchResult::recv_x (+ scales)
  void* stream = nullptr;                  // CUDA backend only
};

struct DispatchResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  int64_t num_recv_tokens = 0;                    // M
  std::vector<uint8_t> recv_x;                    // [M x H] of dtype
  std::vector<float> recv_x_scales;               // [M x S] (FP8 only)
  std::vector<int32_t> recv_src_rank;             // [M] source rank of each received token
  std::vector<int32_t> recv_src_token;            // [M] index on the source rank
  std::vector<int64_t> recv_topk_idx;             // [M x K] local expert id in [0, L), -1 if not local
  std::vector<float> recv_topk_weights;           // [M x K]
  std::vector<int64_t> num_recv_tokens_per_expert;  // [L] unpadded
  // Expert-major layout (grouped GEMM input): rows of expert j are
  // [expert_offsets[j], expert_offsets[j+1]); offsets are multiples of expert_alignment.
  std::vector<int64_t> expert_offsets;            // [L + 1]
  std::vector<int32_t> expert_row_token;          // [P] received token of each row, -1 = padding
  std::vector<int32_t> expert_row_slot;           // [P] top-k slot k of each row, -1 = padding
  std::vector<uint8_t> expert_x;                  // [P x H] of dtype (padding rows zero)
  std::vector<float> expert_x_scales;             // [P x S] (FP8 only)
  Handle handle;
  TrafficStats stats;
};

struct CombineArgs {
  const void* expert_out = nullptr;        // [P x H] of dtype, expert-major (padding rows ignored)
  comm::DataType dtype = comm::DataType::kBfloat16;  // kBfloat16 or kFloat32
  const Handle* handle = nullptr;
  const float* weights = nullptr;          // [M x K] gate weights of the received tokens; nullptr = 1
  void* stream = nullptr;                  // CUDA backend only
};

struct CombineResult {
  comm::DataType dtype = comm::DataType::kBfloat16;
  std::vector<uint8_t> y;                  // [T x H] of dtype
  TrafficStats stats;
};

struct CombineBackwardArgs {
  const void* grad_y = nullptr;            // [T x H] of dtype (kBfloat16 or kFloat32)
  comm::DataType dtype = comm::DataType::kFloat32;
  const Handle* handle = nullptr;
  const void* expert_out = nullptr;        // [P x H] of dtype: the forward combine input
  const float* weights = nullptr;          // [M x K] the forward combine weights; nullptr = 1
};

struct CombineBackwardResult {
  std::vector<uint8_t> grad_expert_out;    // [P x H] of dtype: weight * dy of the row's token
  std::vector<float> grad_recv_weights;    // [M x K] <dy, out_k> for local slots, else 0
  std::vector<float> grad_topk_weights;    // [T x K] at the source: the same, reduced back
  TrafficStats stats;
};

// A result that is being computed on a helper thread (async forms).
template <class T>
class Pending {
 public:
  Pending() = default;
  explicit Pending(std::future<T> f) : future_(std::move(f)) {}
  bool test() const { return future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
  T wait() { return future_.get(); }  // rethrows the call's error; call once
  bool valid() const { return future_.valid(); }

 private:
  std::future<T> future_;
};

// ---- Low-latency mode ----
// Same-node peers (and this rank) write each (token, local expert) row straight into the
// destination's output in shared memory (PeerExchange::open_window; docs/dispatch.md): a
// block of rows per expert claimed with one atomic add, then a release flag; the receive
// hook waits for the flags. There is no separate count exchange. Ranks on other nodes get
// one message per peer: a 16-byte header {int64 rows, int64 hidden} then `rows` slots of
// [H payload (FP8) or 2H (BF16)][S * 4 FP32 scales, FP8][int32 src_token]
// [int32 local_expert[kLowLatencyMaxTopK]][float weight[kLowLatencyMaxTopK]].
constexpr int kLowLatencyMaxTopK = 16;

struct LowLatencyDispatchArgs {
  const uint16_t* x = nullptr;          // [T x H] BF16 bits
  const int64_t* topk_idx = nullptr;    // [T x K] int64, -1 masked
  const float* topk_weights = nullptr;  // [T x K] gate weights applied by low_latency_combine; nullptr = 1
  int64_t num_tokens = 0;               // T <= low_latency_max_tokens
  int top_k = 0;                        // K <= kLowLatencyMaxTopK
  bool use_fp8 = true;                  // cast to FP8 E4M3 with 1x128 scales inside dispatch
  bool pow2_scales = false;             // UE8M0-style power-of-two scales
};

// Views into the Buffer's receive area; valid until the next low_latency_dispatch_send.
// Rows of expert j: [0, count[j]), one block per source rank (tokens ascending inside a
// block), blocks in the order the sources claimed them; src_rank/src_token name each row.
struct LowLatencyView {
  comm::DataType dtype = comm::DataType::kFloat8E4M3;
  int64_t slots_per_expert = 0;      // R * low_latency_max_tokens
  const uint8_t* x = nullptr;        // [L x slots x H] of dtype; rows [0, count[j]) of expert j are valid
  const float* scales = nullptr;     // [L x slots x S] (FP8 only)
  const int32_t* count = nullptr;    // [L]
  const int32_t* src_rank = nullptr;   // [L x slots]
  const int32_t* src_token = nullptr;  // [L x slots]
  TrafficStats stats;
};
using LowLatencyRecvHook = std::function<LowLatencyView()>;
using LowLatencyCombineHook = std::function<const uint16_t*()>;

class Buffer {
 public:
  // Collective over comm: checks that every rank uses the same options (hidden, experts).
  Buffer(std::shared_ptr<comm::Communicator> comm, const BufferOptions& options);
  // Over any PeerExchange (tests run ranks as threads).
  Buffer(std::shared_ptr<PeerExchange> exchange, const BufferOptions& options);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  int rank() const;
  int num_ranks() const;
  int num_local_experts() const { return num_local_experts_; }
  const BufferOptions& options() const { return options_; }
  PeerExchange& exchange() { return *exchange_; }
  // True when dispatch uses the two-hop path (more than one node, two_hop, equal nodes).
  bool uses_two_hop() const { return two_hop_; }

  DispatchLayout layout(const int64_t* topk_idx, int64_t num_tokens, int top_k) const;

  DispatchResult dispatch(const DispatchArgs& args);
  CombineResult combine(const CombineArgs& args);
  // The same calls writing into a result the caller keeps between calls (same values as
  // dispatch()/combine()). Every field of `out` is overwritten; its vectors keep their
  // capacity, and a vector that already has this call's size is neither reallocated nor
  // zero-filled first, so a result reused step after step allocates and page-faults nothing
  // once the sizes are stable (the large payloads: expert_x 64 MiB per rank at 4096 tokens
  // x 1024 FP32 x top-4). Inputs must not point into `out`. On an exception `out` holds
  // unspecified (valid) contents.
  void dispatch_into(const DispatchArgs& args, DispatchResult& out);
  void combine_into(const CombineArgs& args, CombineResult& out);
  // Backward of dispatch: dy_expert [P x H] -> dx [T x H] (a combine with unit weights).
  CombineResult dispatch_backward(const void* grad_expert_x, comm::DataType dtype, const Handle& handle);
  CombineBackwardResult combine_backward(const CombineBackwardArgs& args);

  Pending<DispatchResult> dispatch_async(const DispatchArgs& args);
  Pending<CombineResult> combine_async(const CombineArgs& args);

  // Low-latency mode (BufferOptions::low_latency_max_tokens > 0; decode). All buffers are
  // allocated at construction; one dispatch/combine pair is in flight at a time and the
  // views stay valid until the next low_latency_dispatch_send. The _send forms post the
  // messages and return a hook; calling the hook completes the receive (compute may run in
  // between). Do not call anything else on the Buffer while a hook is outstanding.
  LowLatencyRecvHook low_latency_dispatch_send(const LowLatencyDispatchArgs& args);
  LowLatencyView low_latency_dispatch(const LowLatencyDispatchArgs& args) { return low_latency_dispatch_send(args)(); }
  // expert_out [L x slots x H] BF16 bits in the view's layout -> y [T x H] BF16 (Buffer-owned).
  LowLatencyCombineHook low_latency_combine_send(const uint16_t* expert_out);
  const uint16_t* low_latency_combine(const uint16_t* expert_out) { return low_latency_combine_send(expert_out)(); }

  // Opaque implementation state (staging memory, low-latency buffers).
  struct Workspace;
  struct LowLatencyState;

 private:
  std::unique_ptr<Workspace> ws_;
  void init_low_latency();
  std::unique_ptr<LowLatencyState> ll_;
  std::shared_ptr<PeerExchange> exchange_;
  BufferOptions options_;
  int num_local_experts_ = 0;
  bool two_hop_ = false;
  int64_t max_tokens_any_rank_ = 0;  // largest max_tokens_per_rank in the group
};

// Bytes of one element of a payload type (kBfloat16 2, kFloat32 4, kFloat8E4M3 1).
size_t payload_elem_bytes(comm::DataType t);

}  // namespace switchyard::dispatch
