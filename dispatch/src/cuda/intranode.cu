// IntranodeBuffer (intranode.h): dispatch and combine through CUDA IPC windows.
//
// dispatch: layout kernel -> per-destination send positions (a column scan of
// is_token_in_rank) -> one block per token writes its row into every destination's window
// slot [me][position] -> counts written into the destinations -> barrier -> gather the
// received rows in canonical order -> expert-major rows from a column scan over
// (received token, local expert) -> barrier.
// combine: one block per received token sums its local slots (k ascending) and writes the
// partial into the source's combine window -> barrier -> one block per own token adds the
// partials of the ranks ascending -> barrier.
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstring>

#include "fp8_device.cuh"
#include "switchyard/comm/cuda_ipc.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/dispatch/cuda/intranode.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kThreads = 256;

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

size_t elem_bytes(comm::DataType t) {
  switch (t) {
    case comm::DataType::kBfloat16:
      return 2;
    case comm::DataType::kFloat32:
      return 4;
    case comm::DataType::kFloat8E4M3:
      return 1;
    default:
      SY_THROW(InvalidArgument, "gpu dispatch: dtype " << comm::dtype_name(t)
                                                       << " is not a payload type (bfloat16, float32, float8_e4m3)");
  }
}

// Byte offsets inside one dispatch slot.
struct SlotFormat {
  int64_t scales = 0, meta = 0, bytes = 0;  // meta: src_token, expert[max_k], weight[max_k]
};

SlotFormat slot_format(int64_t hidden, int max_top_k) {
  SlotFormat f;
  f.scales = round_up(hidden * 4, 16);
  f.meta = f.scales + round_up(fp8_num_tiles(hidden) * 4, 16);
  f.bytes = f.meta + round_up((1 + 2 * max_top_k) * 4, 16);
  return f;
}

// Copies n bytes with the widest access both pointers allow (rows are 16-byte aligned when
// their size is a multiple of 16).
__device__ void copy_bytes(uint8_t* dst, const uint8_t* src, int64_t n) {
  if ((n % 16) == 0 && (reinterpret_cast<uintptr_t>(dst) % 16) == 0 && (reinterpret_cast<uintptr_t>(src) % 16) == 0) {
    for (int64_t i = threadIdx.x; i < n / 16; i += blockDim.x)
      reinterpret_cast<int4*>(dst)[i] = reinterpret_cast<const int4*>(src)[i];
  } else if ((n % 4) == 0 && (reinterpret_cast<uintptr_t>(dst) % 4) == 0 && (reinterpret_cast<uintptr_t>(src) % 4) == 0) {
    for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x)
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
  }
}

// flags [n x c] uint8 -> pos [n x c] int32 (exclusive prefix count down each column) and
// totals [c] int64. One block per column.
__global__ void column_scan_kernel(const uint8_t* __restrict__ flags, int64_t n, int c, int32_t* __restrict__ pos,
                                   int64_t* __restrict__ totals) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int col = blockIdx.x;
  int64_t running = 0;
  for (int64_t base = 0; base < n; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const int v = i < n ? flags[i * c + col] : 0;
    int excl = 0, sum = 0;
    Scan(tmp).ExclusiveSum(v, excl, sum);
    if (i < n) pos[i * c + col] = static_cast<int32_t>(running + excl);
    running += sum;
    __syncthreads();  // tmp is reused by the next chunk
  }
  if (threadIdx.x == 0) totals[col] = running;
}

struct SendParams {
  const uint8_t* x;
  const float* x_scales;
  const int64_t* topk_idx;
  const float* topk_weights;
  const uint8_t* in_rank;  // [T x R]
  const int32_t* pos;      // [T x R]
  uint8_t* const* peers;   // [R] window bases
  int64_t row_bytes, num_scales, window_slots, max_tokens;
  SlotFormat fmt;
  int num_ranks, me, top_k, max_top_k;
};

// One block per token: its row into the window of every destination rank.
__global__ void send_kernel(SendParams p) {
  const int64_t t = blockIdx.x;
  for (int r = 0; r < p.num_ranks; ++r) {
    if (!p.in_rank[t * p.num_ranks + r]) continue;
    uint8_t* slot = p.peers[r] + p.window_slots + (p.me * p.max_tokens + p.pos[t * p.num_ranks + r]) * p.fmt.bytes;
    copy_bytes(slot, p.x + t * p.row_bytes, p.row_bytes);
    if (p.x_scales != nullptr)
      for (int64_t s = threadIdx.x; s < p.num_scales; s += blockDim.x)
        reinterpret_cast<float*>(slot + p.fmt.scales)[s] = p.x_scales[t * p.num_scales + s];
    int32_t* meta = reinterpret_cast<int32_t*>(slot + p.fmt.meta);
    if (threadIdx.x == 0) meta[0] = static_cast<int32_t>(t);
    for (int k = threadIdx.x; k < p.top_k; k += blockDim.x) {
      meta[1 + k] = static_cast<int32_t>(p.topk_idx[t * p.top_k + k]);
      reinterpret_cast<float*>(meta + 1 + p.max_top_k)[k] = p.topk_weights ? p.topk_weights[t * p.top_k + k] : 0.0f;
    }
  }
}

// Thread r writes this rank's row count into destination r's count array.
__global__ void send_counts_kernel(uint8_t* const* peers, const int64_t* per_rank, int num_ranks, int me) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < num_ranks) reinterpret_cast<int64_t*>(peers[r])[me] = per_rank[r];
}

__device__ int source_of(const int64_t* recv_off, int num_ranks, int64_t i) {
  int s = 0;
  while (s + 1 < num_ranks && recv_off[s + 1] <= i) ++s;
  return s;
}

struct GatherParams {
  const uint8_t* window;     // own window base
  const int64_t* recv_off;   // [R + 1]
  uint8_t* recv_x;
  float* recv_scales;        // nullptr unless FP8
  int32_t* src_rank;
  int32_t* src_token;
  int64_t* topk_local;       // [M x K]
  float* topk_weights;       // [M x K]
  uint8_t* expert_flags;     // [M x L]
  int64_t row_bytes, num_scales, window_slots, max_tokens;
  SlotFormat fmt;
  int num_ranks, me, top_k, max_top_k, num_local;
};

// One block per received token (canonical order).
__global__ void gather_kernel(GatherParams p) {
  const int64_t i = blockIdx.x;
  const int s = source_of(p.recv_off, p.num_ranks, i);
  const uint8_t* slot = p.window + p.window_slots + (s * p.max_tokens + (i - p.recv_off[s])) * p.fmt.bytes;
  copy_bytes(p.recv_x + i * p.row_bytes, slot, p.row_bytes);
  if (p.recv_scales != nullptr)
    for (int64_t j = threadIdx.x; j < p.num_scales; j += blockDim.x)
      p.recv_scales[i * p.num_scales + j] = reinterpret_cast<const float*>(slot + p.fmt.scales)[j];
  const int32_t* meta = reinterpret_cast<const int32_t*>(slot + p.fmt.meta);
  if (threadIdx.x == 0) {
    p.src_rank[i] = s;
    p.src_token[i] = meta[0];
    for (int j = 0; j < p.num_local; ++j) p.expert_flags[i * p.num_local + j] = 0;
    for (int k = 0; k < p.top_k; ++k) {
      const int32_t e = meta[1 + k];
      const bool local = e >= 0 && e / p.num_local == p.me;
      const int64_t j = local ? e - static_cast<int64_t>(p.me) * p.num_local : -1;
      p.topk_local[i * p.top_k + k] = j;
      p.topk_weights[i * p.top_k + k] = reinterpret_cast<const float*>(meta + 1 + p.max_top_k)[k];
      if (local) p.expert_flags[i * p.num_local + j] = 1;
    }
  }
}

struct ExpertRowParams {
  const uint8_t* recv_x;
  const float* recv_scales;
  const int64_t* topk_local;   // [M x K]
  const int32_t* expert_pos;   // [M x L]
  const int64_t* offsets;      // [L + 1]
  int32_t* row_token;          // [P]
  int32_t* row_slot;           // [P]
  int32_t* slot_row;           // [M x K]
  uint8_t* expert_x;
  float* expert_scales;
  int64_t row_bytes, num_scales;
  int top_k, num_local;
};

// One block per received token: its copies into the expert-major rows.
__global__ void expert_rows_kernel(ExpertRowParams p) {
  const int64_t i = blockIdx.x;
  for (int k = 0; k < p.top_k; ++k) {
    const int64_t j = p.topk_local[i * p.top_k + k];
    if (j < 0) continue;
    const int64_t row = p.offsets[j] + p.expert_pos[i * p.num_local + j];
    if (threadIdx.x == 0) {
      p.row_token[row] = static_cast<int32_t>(i);
      p.row_slot[row] = k;
      p.slot_row[i * p.top_k + k] = static_cast<int32_t>(row);
    }
    copy_bytes(p.expert_x + row * p.row_bytes, p.recv_x + i * p.row_bytes, p.row_bytes);
    if (p.recv_scales != nullptr)
      for (int64_t s = threadIdx.x; s < p.num_scales; s += blockDim.x)
        p.expert_scales[row * p.num_scales + s] = p.recv_scales[i * p.num_scales + s];
  }
}

__device__ __forceinline__ float load_elem(const uint8_t* base, bool bf16, int64_t i) {
  return bf16 ? bf16_to_float_dev(reinterpret_cast<const uint16_t*>(base)[i]) : reinterpret_cast<const float*>(base)[i];
}

__device__ __forceinline__ void store_elem(uint8_t* base, bool bf16, int64_t i, float v) {
  if (bf16)
    reinterpret_cast<uint16_t*>(base)[i] = bf16_from_float_dev(v);
  else
    reinterpret_cast<float*>(base)[i] = v;
}

struct PartialParams {
  const uint8_t* expert_out;  // [P x H]
  const float* weights;       // [M x K] or nullptr
  const int32_t* slot_row;    // [M x K]
  const int64_t* recv_off;    // [R + 1]
  uint8_t* const* peers;
  int64_t hidden, window_combine, max_tokens;
  int num_ranks, me, top_k;
  bool bf16;
};

// One block per received token: sum_k w_k * out[row_k] (k ascending, FP32, no FMA), stored
// in the payload type into the source's combine window slot [me][index at the source's send].
__global__ void combine_partial_kernel(PartialParams p) {
  const int64_t i = blockIdx.x;
  const int s = source_of(p.recv_off, p.num_ranks, i);
  const size_t eb = p.bf16 ? 2 : 4;
  uint8_t* dst = p.peers[s] + p.window_combine + (p.me * p.max_tokens + (i - p.recv_off[s])) * p.hidden * eb;
  for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < p.top_k; ++k) {
      const int32_t row = p.slot_row[i * p.top_k + k];
      if (row < 0) continue;
      const float w = p.weights ? p.weights[i * p.top_k + k] : 1.0f;
      acc = __fadd_rn(acc, __fmul_rn(w, load_elem(p.expert_out + row * p.hidden * eb, p.bf16, h)));
    }
    store_elem(dst, p.bf16, h, acc);
  }
}

struct ReduceParams {
  const uint8_t* window;    // own window base
  const uint8_t* in_rank;   // [T x R]
  const int32_t* pos;       // [T x R]
  uint8_t* y;               // [T x H]
  int64_t hidden, window_combine, max_tokens;
  int num_ranks;
  bool bf16;
};

// One block per own token: the partials of the ranks it went to, ranks ascending (FP32).
__global__ void combine_reduce_kernel(ReduceParams p) {
  const int64_t t = blockIdx.x;
  const size_t eb = p.bf16 ? 2 : 4;
  for (int64_t h = threadIdx.x; h < p.hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int r = 0; r < p.num_ranks; ++r) {
      if (!p.in_rank[t * p.num_ranks + r]) continue;
      const uint8_t* src = p.window + p.window_combine + (r * p.max_tokens + p.pos[t * p.num_ranks + r]) * p.hidden * eb;
      acc = __fadd_rn(acc, load_elem(src, p.bf16, h));
    }
    store_elem(p.y + t * p.hidden * eb, p.bf16, h, acc);
  }
}

unsigned grid_of(int64_t n, const char* what) {
  SY_REQUIRE(n < (int64_t{1} << 31), "gpu dispatch: " << what << " grid of " << n << " blocks is too large");
  return static_cast<unsigned>(n);
}

}  // namespace

struct IntranodeHandle::Plan {
  int64_t num_tokens = 0, num_recv = 0;
  int top_k = 0;
  cuda::DeviceBuffer in_rank;   // [T x R] uint8
  cuda::DeviceBuffer send_pos;  // [T x R] int32
  cuda::DeviceBuffer recv_off;  // [R + 1] int64
  cuda::DeviceBuffer slot_row;  // [M x K] int32
  int64_t num_expert_rows = 0;
};

int64_t IntranodeHandle::num_tokens() const { return plan_ ? plan_->num_tokens : 0; }
int64_t IntranodeHandle::num_recv_tokens() const { return plan_ ? plan_->num_recv : 0; }

struct IntranodeBuffer::State {
  std::shared_ptr<comm::Communicator> host;
  IntranodeOptions options;
  int R = 0, me = 0, L = 0;
  SlotFormat fmt;
  int64_t window_slots = 0, window_combine = 0;
  cuda::DeviceBuffer window;
  std::unique_ptr<comm::IpcPeerMemory> ipc;
  cuda::DeviceBuffer peers;     // [R] uint8_t* (device)
  cuda::DeviceBuffer node_of;   // [R] int32, all 0
  std::vector<cuda::Event> ev;  // [4] around the two kernel phases of a call
  double last_kernel_us = 0;

  // Time of the last call's two kernel phases (ev[0]..ev[1] and ev[2]..ev[3]); the stream
  // has been synchronized by the fences.
  void take_kernel_time() {
    last_kernel_us = 1000.0 * (ev[1].elapsed_ms_since(ev[0]) + ev[3].elapsed_ms_since(ev[2]));
  }

  // Waits for this rank's kernels, then for every rank (host barrier).
  void fence(cuda::StreamHandle stream, const char* what) {
    SY_CUDA_CHECK(cudaStreamSynchronize(stream), "gpu " << what << " on rank " << me);
    host->barrier();
  }
};

IntranodeBuffer::IntranodeBuffer(std::shared_ptr<comm::Communicator> host, const IntranodeOptions& options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  SY_REQUIRE(host != nullptr, "IntranodeBuffer: host communicator is null");
  s.host = std::move(host);
  s.options = options;
  s.R = s.host->size();
  s.me = s.host->rank();
  SY_REQUIRE(options.num_experts > 0 && options.num_experts % s.R == 0,
             "IntranodeBuffer: num_experts = " << options.num_experts << " is not a positive multiple of the " << s.R
                                               << " ranks");
  SY_REQUIRE(options.hidden > 0, "IntranodeBuffer: hidden = " << options.hidden << " must be > 0");
  SY_REQUIRE(options.max_tokens_per_rank > 0,
             "IntranodeBuffer: max_tokens_per_rank = " << options.max_tokens_per_rank << " must be > 0");
  SY_REQUIRE(options.max_top_k >= 1, "IntranodeBuffer: max_top_k = " << options.max_top_k << " must be >= 1");
  if (s.host->rank_map().num_nodes() != 1)
    SY_THROW(Unsupported, "IntranodeBuffer: the group spans " << s.host->rank_map().num_nodes()
                                                              << " nodes; the GPU path is intra-node only");
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "IntranodeBuffer: no GPU is usable on this machine");
  // Every rank must agree on the options (the window layout depends on them).
  const int64_t mine[4] = {options.num_experts, options.hidden, options.max_tokens_per_rank, options.max_top_k};
  std::vector<int64_t> all(4 * s.R);
  s.host->all_gather(mine, all.data(), 4, comm::DataType::kInt64);
  for (int r = 0; r < s.R; ++r)
    if (!std::equal(mine, mine + 4, all.begin() + 4 * r))
      SY_THROW(InvalidArgument, "IntranodeBuffer on rank " << s.me << ": rank " << r
                                                           << " uses different options (experts, hidden, "
                                                              "max_tokens_per_rank, max_top_k)");
  s.L = options.num_experts / s.R;
  s.fmt = slot_format(options.hidden, options.max_top_k);
  s.window_slots = round_up(s.R * 8, 256);
  s.window_combine = s.window_slots + s.R * options.max_tokens_per_rank * s.fmt.bytes;
  const int64_t total = s.window_combine + s.R * options.max_tokens_per_rank * options.hidden * 4;
  s.window = cuda::DeviceBuffer(total);
  s.window.fill_zero();
  SY_CUDA_CHECK(cudaDeviceSynchronize(), "IntranodeBuffer: clear the window");
  s.ipc = comm::IpcPeerMemory::exchange(*s.host, s.window);
  std::vector<uint8_t*> ptrs(s.R);
  for (int r = 0; r < s.R; ++r) ptrs[r] = static_cast<uint8_t*>(s.ipc->peer(r));
  s.peers = cuda::DeviceBuffer(s.R * sizeof(uint8_t*));
  s.peers.copy_from_host(ptrs.data(), ptrs.size() * sizeof(uint8_t*));
  s.node_of = cuda::DeviceBuffer(s.R * sizeof(int32_t));
  s.node_of.fill_zero();
  for (int i = 0; i < 4; ++i) s.ev.emplace_back(true);
  SY_CUDA_CHECK(cudaDeviceSynchronize(), "IntranodeBuffer: setup");
  s.host->barrier();
}

IntranodeBuffer::~IntranodeBuffer() {
  // Peers may still map this window: keep it until every rank closed its mappings.
  try {
    state_->ipc.reset();
    state_->host->barrier();
  } catch (const std::exception& e) {
    SY_WARN("dispatch", "IntranodeBuffer: teardown barrier failed: " << e.what());
  }
}

int IntranodeBuffer::rank() const { return state_->me; }
int IntranodeBuffer::num_ranks() const { return state_->R; }
int IntranodeBuffer::num_local_experts() const { return state_->L; }
double IntranodeBuffer::last_kernel_us() const { return state_->last_kernel_us; }

DeviceDispatchResult IntranodeBuffer::dispatch(const DeviceDispatchArgs& args) {
  State& s = *state_;
  const int R = s.R, me = s.me, L = s.L, K = args.top_k;
  const int64_t T = args.num_tokens, H = s.options.hidden, S = fp8_num_tiles(H), Tmax = s.options.max_tokens_per_rank;
  const size_t eb = elem_bytes(args.dtype);
  const bool fp8 = args.dtype == comm::DataType::kFloat8E4M3;
  SY_REQUIRE(T >= 0 && T <= Tmax, "gpu dispatch on rank " << me << ": num_tokens = " << T << " is outside [0, "
                                                          << Tmax << "] (max_tokens_per_rank)");
  SY_REQUIRE(K >= 1 && K <= s.options.max_top_k,
             "gpu dispatch on rank " << me << ": top_k = " << K << " is outside [1, " << s.options.max_top_k << "]");
  SY_REQUIRE(args.expert_alignment >= 1,
             "gpu dispatch on rank " << me << ": expert_alignment = " << args.expert_alignment << " must be >= 1");
  SY_REQUIRE(T == 0 || (args.x != nullptr && args.topk_idx != nullptr),
             "gpu dispatch on rank " << me << ": x or topk_idx is null");
  SY_REQUIRE(!fp8 || T == 0 || args.x_scales != nullptr,
             "gpu dispatch on rank " << me << ": FP8 payload needs x_scales [T x " << S << "]");
  cudaStream_t st = args.stream;

  auto plan = std::make_shared<IntranodeHandle::Plan>();
  plan->num_tokens = T;
  plan->top_k = K;
  const int64_t Tn = std::max<int64_t>(T, 1);
  plan->in_rank = cuda::DeviceBuffer(Tn * R);
  plan->send_pos = cuda::DeviceBuffer(Tn * R * sizeof(int32_t));
  cuda::DeviceBuffer per_rank(R * sizeof(int64_t)), per_node(sizeof(int64_t)), per_expert(s.options.num_experts * 8),
      err(sizeof(int64_t)), totals(R * sizeof(int64_t));
  DeviceLayoutOutputs lo;
  lo.num_tokens_per_rank = per_rank.as<int64_t>();
  lo.num_tokens_per_node = per_node.as<int64_t>();
  lo.num_tokens_per_expert = per_expert.as<int64_t>();
  lo.is_token_in_rank = plan->in_rank.as<uint8_t>();
  lo.error = err.as<int64_t>();
  launch_dispatch_layout(args.topk_idx, T, K, s.options.num_experts, R, s.node_of.as<int32_t>(), 1, lo, st);
  if (T > 0) {
    column_scan_kernel<<<R, kThreads, 0, st>>>(plan->in_rank.as<uint8_t>(), T, R, plan->send_pos.as<int32_t>(),
                                               totals.as<int64_t>());
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: send positions");
  }
  SY_CUDA_CHECK(cudaStreamSynchronize(st), "gpu dispatch layout on rank " << me);
  int64_t bad = -1;
  err.copy_to_host(&bad, sizeof(bad));
  if (bad != -1)
    SY_THROW(InvalidArgument, "gpu dispatch on rank " << me << ": topk_idx[" << bad / K << "][" << bad % K
                                                      << "] is out of range [-1, " << s.options.num_experts
                                                      << ") or repeats an expert of its row");
  s.ev[0].record(st);
  if (T > 0) {
    SendParams p{};
    p.x = static_cast<const uint8_t*>(args.x);
    p.x_scales = fp8 ? args.x_scales : nullptr;
    p.topk_idx = args.topk_idx;
    p.topk_weights = args.topk_weights;
    p.in_rank = plan->in_rank.as<uint8_t>();
    p.pos = plan->send_pos.as<int32_t>();
    p.peers = s.peers.as<uint8_t* const>();
    p.row_bytes = H * static_cast<int64_t>(eb);
    p.num_scales = S;
    p.window_slots = s.window_slots;
    p.max_tokens = Tmax;
    p.fmt = s.fmt;
    p.num_ranks = R;
    p.me = me;
    p.top_k = K;
    p.max_top_k = s.options.max_top_k;
    send_kernel<<<grid_of(T, "send"), kThreads, 0, st>>>(p);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: send rows");
  }
  send_counts_kernel<<<1, std::max(32, R), 0, st>>>(s.peers.as<uint8_t* const>(), per_rank.as<int64_t>(), R, me);
  SY_CUDA_CHECK_LAUNCH("gpu dispatch: send counts");
  s.ev[1].record(st);
  s.fence(st, "dispatch (send)");

  // Receive: counts from every source, canonical order = sources ascending.
  std::vector<int64_t> counts(R), off(R + 1, 0);
  s.window.copy_to_host(counts.data(), R * sizeof(int64_t));
  for (int r = 0; r < R; ++r) off[r + 1] = off[r] + counts[r];
  const int64_t M = off[R];
  plan->num_recv = M;
  plan->recv_off = cuda::DeviceBuffer((R + 1) * sizeof(int64_t));
  plan->recv_off.copy_from_host(off.data(), off.size() * sizeof(int64_t));

  DeviceDispatchResult res;
  res.dtype = args.dtype;
  res.num_recv_tokens = M;
  const int64_t Mn = std::max<int64_t>(M, 1);
  res.recv_x = cuda::DeviceBuffer(Mn * H * eb);
  if (fp8) res.recv_x_scales = cuda::DeviceBuffer(Mn * S * sizeof(float));
  res.recv_src_rank = cuda::DeviceBuffer(Mn * sizeof(int32_t));
  res.recv_src_token = cuda::DeviceBuffer(Mn * sizeof(int32_t));
  res.recv_topk_idx = cuda::DeviceBuffer(Mn * K * sizeof(int64_t));
  res.recv_topk_weights = cuda::DeviceBuffer(Mn * K * sizeof(float));
  cuda::DeviceBuffer flags(Mn * L), expert_pos(Mn * L * sizeof(int32_t)), expert_count(L * sizeof(int64_t));
  expert_count.fill_zero(st);
  s.ev[2].record(st);
  if (M > 0) {
    GatherParams g{};
    g.window = s.window.as<uint8_t>();
    g.recv_off = plan->recv_off.as<int64_t>();
    g.recv_x = res.recv_x.as<uint8_t>();
    g.recv_scales = fp8 ? res.recv_x_scales.as<float>() : nullptr;
    g.src_rank = res.recv_src_rank.as<int32_t>();
    g.src_token = res.recv_src_token.as<int32_t>();
    g.topk_local = res.recv_topk_idx.as<int64_t>();
    g.topk_weights = res.recv_topk_weights.as<float>();
    g.expert_flags = flags.as<uint8_t>();
    g.row_bytes = H * static_cast<int64_t>(eb);
    g.num_scales = S;
    g.window_slots = s.window_slots;
    g.max_tokens = Tmax;
    g.fmt = s.fmt;
    g.num_ranks = R;
    g.me = me;
    g.top_k = K;
    g.max_top_k = s.options.max_top_k;
    g.num_local = L;
    gather_kernel<<<grid_of(M, "gather"), kThreads, 0, st>>>(g);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: gather received rows");
    column_scan_kernel<<<L, kThreads, 0, st>>>(flags.as<uint8_t>(), M, L, expert_pos.as<int32_t>(),
                                               expert_count.as<int64_t>());
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: expert positions");
  }
  res.num_recv_tokens_per_expert.resize(L);
  SY_CUDA_CHECK(cudaStreamSynchronize(st), "gpu dispatch receive on rank " << me);
  expert_count.copy_to_host(res.num_recv_tokens_per_expert.data(), L * sizeof(int64_t));
  res.expert_offsets.assign(L + 1, 0);
  for (int j = 0; j < L; ++j)
    res.expert_offsets[j + 1] = res.expert_offsets[j] + round_up(res.num_recv_tokens_per_expert[j], args.expert_alignment);
  const int64_t P = res.expert_offsets[L], Pn = std::max<int64_t>(P, 1);
  plan->num_expert_rows = P;
  cuda::DeviceBuffer d_offsets((L + 1) * sizeof(int64_t));
  d_offsets.copy_from_host(res.expert_offsets.data(), (L + 1) * sizeof(int64_t));
  res.expert_row_token = cuda::DeviceBuffer(Pn * sizeof(int32_t));
  res.expert_row_slot = cuda::DeviceBuffer(Pn * sizeof(int32_t));
  res.expert_x = cuda::DeviceBuffer(Pn * H * eb);
  if (fp8) res.expert_x_scales = cuda::DeviceBuffer(Pn * S * sizeof(float));
  plan->slot_row = cuda::DeviceBuffer(Mn * K * sizeof(int32_t));
  SY_CUDA_CHECK(cudaMemsetAsync(res.expert_row_token.data(), 0xff, res.expert_row_token.bytes(), st), "padding rows");
  SY_CUDA_CHECK(cudaMemsetAsync(res.expert_row_slot.data(), 0xff, res.expert_row_slot.bytes(), st), "padding rows");
  SY_CUDA_CHECK(cudaMemsetAsync(plan->slot_row.data(), 0xff, plan->slot_row.bytes(), st), "slot rows");
  res.expert_x.fill_zero(st);
  if (fp8) res.expert_x_scales.fill_zero(st);
  if (M > 0) {
    ExpertRowParams e{};
    e.recv_x = res.recv_x.as<uint8_t>();
    e.recv_scales = fp8 ? res.recv_x_scales.as<float>() : nullptr;
    e.topk_local = res.recv_topk_idx.as<int64_t>();
    e.expert_pos = expert_pos.as<int32_t>();
    e.offsets = d_offsets.as<int64_t>();
    e.row_token = res.expert_row_token.as<int32_t>();
    e.row_slot = res.expert_row_slot.as<int32_t>();
    e.slot_row = plan->slot_row.as<int32_t>();
    e.expert_x = res.expert_x.as<uint8_t>();
    e.expert_scales = fp8 ? res.expert_x_scales.as<float>() : nullptr;
    e.row_bytes = H * static_cast<int64_t>(eb);
    e.num_scales = S;
    e.top_k = K;
    e.num_local = L;
    expert_rows_kernel<<<grid_of(M, "expert rows"), kThreads, 0, st>>>(e);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: expert-major rows");
  }
  s.ev[3].record(st);
  // The window may be overwritten by the next call only after every rank read it.
  s.fence(st, "dispatch (receive)");
  s.take_kernel_time();
  res.handle.plan_ = std::move(plan);
  return res;
}

DeviceCombineResult IntranodeBuffer::combine(const DeviceCombineArgs& args) {
  State& s = *state_;
  const int R = s.R, me = s.me;
  SY_REQUIRE(args.handle != nullptr && args.handle->valid(), "gpu combine on rank " << me << ": handle is empty");
  SY_REQUIRE(args.dtype == comm::DataType::kBfloat16 || args.dtype == comm::DataType::kFloat32,
             "gpu combine on rank " << me << ": dtype must be bfloat16 or float32 (FP8 is a dispatch-only payload)");
  const IntranodeHandle::Plan& plan = *args.handle->plan_;
  SY_REQUIRE(plan.num_expert_rows == 0 || args.expert_out != nullptr, "gpu combine on rank " << me << ": expert_out is null");
  const bool bf16 = args.dtype == comm::DataType::kBfloat16;
  const int64_t H = s.options.hidden, eb = bf16 ? 2 : 4;
  cudaStream_t st = args.stream;
  s.ev[0].record(st);
  if (plan.num_recv > 0) {
    PartialParams p{};
    p.expert_out = static_cast<const uint8_t*>(args.expert_out);
    p.weights = args.weights;
    p.slot_row = plan.slot_row.as<int32_t>();
    p.recv_off = plan.recv_off.as<int64_t>();
    p.peers = s.peers.as<uint8_t* const>();
    p.hidden = H;
    p.window_combine = s.window_combine;
    p.max_tokens = s.options.max_tokens_per_rank;
    p.num_ranks = R;
    p.me = me;
    p.top_k = plan.top_k;
    p.bf16 = bf16;
    combine_partial_kernel<<<grid_of(plan.num_recv, "combine"), kThreads, 0, st>>>(p);
    SY_CUDA_CHECK_LAUNCH("gpu combine: partial sums");
  }
  s.ev[1].record(st);
  s.fence(st, "combine (send)");
  DeviceCombineResult res;
  res.dtype = args.dtype;
  res.y = cuda::DeviceBuffer(std::max<int64_t>(plan.num_tokens, 1) * H * eb);
  s.ev[2].record(st);
  if (plan.num_tokens > 0) {
    ReduceParams r{};
    r.window = s.window.as<uint8_t>();
    r.in_rank = plan.in_rank.as<uint8_t>();
    r.pos = plan.send_pos.as<int32_t>();
    r.y = res.y.as<uint8_t>();
    r.hidden = H;
    r.window_combine = s.window_combine;
    r.max_tokens = s.options.max_tokens_per_rank;
    r.num_ranks = R;
    r.bf16 = bf16;
    combine_reduce_kernel<<<grid_of(plan.num_tokens, "combine reduce"), kThreads, 0, st>>>(r);
    SY_CUDA_CHECK_LAUNCH("gpu combine: reduce at the source");
  }
  s.ev[3].record(st);
  s.fence(st, "combine (reduce)");
  s.take_kernel_time();
  return res;
}

}  // namespace switchyard::dispatch::gpu
