// IntranodeBuffer (intranode.h): dispatch and combine through CUDA IPC windows.
//
// dispatch: layout kernel -> per-destination send positions (a column scan of
// is_token_in_rank) and per-expert positions (one block per expert scans the tokens), one
// launch ->
// send: one warp per token reads its row once and writes it into every destination's
// window slot [me][position], with the token's experts and their positions -> counts and
// per-expert counts into the destinations' headers -> synchronize, barrier -> host reads
// the header (M, per-expert counts, so the outputs can be sized) -> receive: one warp per
// received token reads its slot once and writes recv_x and every expert-major row it
// belongs to -> padding rows -> synchronize, barrier (deferred when async).
// combine: one warp per received token sums its expert rows (k ascending) into the source's
// combine window slot -> barrier (several ranks only) -> one warp per own token adds the
// slots of the ranks ascending -> synchronize, barrier (deferred when async).
//
// Memory traffic per row (the copy kernels): send reads the row once and writes it once per
// destination; receive reads each slot once and writes it 1 + (local experts) times; every
// access is a warp-wide contiguous run of 16-byte words (when the row size and the pointers
// allow; 4- or 1-byte words otherwise) with kUnroll loads in flight per lane. All per-row
// pointers are computed once per row (in shared memory per warp); the inner loops only add
// the lane's word index.
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "fp8_device.cuh"
#include "row_device.cuh"
#include "switchyard/comm/cuda_ipc.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/dispatch/cuda/intranode.h"
#include "switchyard/dispatch/cuda/kernels.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kScanThreads = 512;
constexpr int kScanItems = 8;  // rows per thread and step of the position scans
constexpr int kCopyThreads = 1024;  // one CTA per SM of the budget
constexpr int kCopyWarps = kCopyThreads / 32;
constexpr int kMaxRanks = 32;  // a warp holds one destination rank per lane
constexpr int kMaxTopK = 32;   // a warp holds one top-k slot per lane

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
  int64_t scales = 0, meta = 0, bytes = 0;  // meta: src_token, expert[max_k], weight[max_k], epos[max_k]
};

SlotFormat slot_format(int64_t hidden, int max_top_k) {
  SlotFormat f;
  f.scales = round_up(hidden * 4, 16);
  f.meta = f.scales + round_up(fp8_num_tiles(hidden) * 4, 16);
  f.bytes = f.meta + round_up((1 + 3 * max_top_k) * 4, 16);
  return f;
}

// The widest word (16, 4 or 1 bytes) dividing n and every pointer's alignment.
int word_bytes(int64_t n, std::initializer_list<const void*> ptrs) {
  for (int w : {16, 4}) {
    bool ok = n % w == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % w == 0;
    if (ok) return w;
  }
  return 1;
}

// The send positions, one block per column of a scan (kScanItems consecutive rows per
// thread, so a block covers kScanThreads x kScanItems rows per step):
//   block r < R:   pos[t][r] = index of token t among the tokens sent to rank r (exclusive
//                  prefix count down column r of in_rank [T x R]); totals[r] the count;
//   block R + e:   epos[t][k] = index of token t among the tokens selecting expert e, for
//                  the slot k with topk_idx[t][k] == e (other entries are left alone: only
//                  valid local experts are looked up by the receiver).
__global__ void __launch_bounds__(kScanThreads) positions_kernel(const uint8_t* __restrict__ in_rank,
                                                                 const int64_t* __restrict__ topk_idx, int64_t n,
                                                                 int num_ranks, int top_k, int32_t* __restrict__ pos,
                                                                 int64_t* __restrict__ totals,
                                                                 int32_t* __restrict__ epos) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const bool rank_col = static_cast<int>(blockIdx.x) < num_ranks;
  const int col = rank_col ? static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x) - num_ranks;
  int64_t running = 0;
  for (int64_t base = 0; base < n; base += kScanThreads * kScanItems) {
    const int64_t first = base + static_cast<int64_t>(threadIdx.x) * kScanItems;
    int flag[kScanItems], excl[kScanItems], slot[kScanItems];
#pragma unroll
    for (int j = 0; j < kScanItems; ++j) {
      const int64_t t = first + j;
      slot[j] = -1;
      if (t < n) {
        if (rank_col) {
          slot[j] = in_rank[t * num_ranks + col] ? 0 : -1;
        } else {
          for (int k = top_k - 1; k >= 0; --k)
            if (topk_idx[t * top_k + k] == col) slot[j] = k;
        }
      }
      flag[j] = slot[j] >= 0 ? 1 : 0;
    }
    int sum = 0;
    Scan(tmp).ExclusiveSum(flag, excl, sum);
#pragma unroll
    for (int j = 0; j < kScanItems; ++j) {
      const int64_t t = first + j;
      if (t >= n) break;
      if (rank_col)
        pos[t * num_ranks + col] = static_cast<int32_t>(running + excl[j]);
      else if (slot[j] >= 0)
        epos[t * top_k + slot[j]] = static_cast<int32_t>(running + excl[j]);
    }
    running += sum;
    __syncthreads();  // tmp is reused by the next step
  }
  if (rank_col && threadIdx.x == 0) totals[col] = running;
}

struct SendParams {
  const uint8_t* x;
  const float* x_scales;   // nullptr unless FP8
  const int64_t* topk_idx;
  const float* topk_weights;
  const int32_t* epos;     // [T x K]
  const uint8_t* in_rank;  // [T x R]
  const int32_t* pos;      // [T x R]
  uint8_t* const* peers;   // [R] window bases
  int64_t num_tokens, row_bytes, num_scales, window_slots, max_tokens;
  SlotFormat fmt;
  int num_ranks, me, top_k, max_top_k;
};

// One warp per token (grid-stride): its row, scales and metadata into the window slot of
// every destination rank.
template <class W>
__global__ void __launch_bounds__(kCopyThreads, 1) send_kernel(SendParams p) {
  __shared__ uint8_t* s_dst[kCopyWarps][kMaxRanks];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kCopyWarps;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kCopyWarps + warp; t < p.num_tokens; t += warps) {
    const bool to_me = lane < p.num_ranks && p.in_rank[t * p.num_ranks + lane];
    const unsigned mask = __ballot_sync(0xffffffffu, to_me);
    const int nd = __popc(mask);
    if (to_me)
      s_dst[warp][__popc(mask & ((1u << lane) - 1))] =
          p.peers[lane] + p.window_slots + (p.me * p.max_tokens + p.pos[t * p.num_ranks + lane]) * p.fmt.bytes;
    __syncwarp();
    copy_row(reinterpret_cast<const W*>(p.x + t * p.row_bytes), p.row_bytes / static_cast<int64_t>(sizeof(W)),
             s_dst[warp], nd, lane);
    if (p.x_scales != nullptr)
      for (int64_t j = lane; j < p.num_scales; j += 32) {
        const float v = p.x_scales[t * p.num_scales + j];
        for (int d = 0; d < nd; ++d) reinterpret_cast<float*>(s_dst[warp][d] + p.fmt.scales)[j] = v;
      }
    if (lane < p.top_k) {  // lane k: slot k (expert, weight, position in the expert's rows)
      const int k = lane;
      const int32_t e = static_cast<int32_t>(p.topk_idx[t * p.top_k + k]);
      const float w = p.topk_weights ? p.topk_weights[t * p.top_k + k] : 0.0f;
      const int32_t ep = e < 0 ? -1 : p.epos[t * p.top_k + k];
      for (int d = 0; d < nd; ++d) {
        int32_t* meta = reinterpret_cast<int32_t*>(s_dst[warp][d] + p.fmt.meta);
        meta[1 + k] = e;
        reinterpret_cast<float*>(meta + 1 + p.max_top_k)[k] = w;
        meta[1 + 2 * p.max_top_k + k] = ep;
      }
    }
    if (lane == 0)  // the source token
      for (int d = 0; d < nd; ++d) reinterpret_cast<int32_t*>(s_dst[warp][d] + p.fmt.meta)[0] = static_cast<int32_t>(t);
    __syncwarp();  // s_dst is rewritten for the next token
  }
}

// Thread i writes entry i of this rank's header row [1 + L] into destination r's window:
// the rows sent to r, then the rows per local expert of r.
__global__ void send_counts_kernel(uint8_t* const* peers, const int64_t* per_rank, const int64_t* per_expert,
                                   int num_ranks, int num_local, int me) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= num_ranks * (1 + num_local)) return;
  const int r = i / (1 + num_local), c = i % (1 + num_local);
  const int64_t v = c == 0 ? per_rank[r] : per_expert[r * num_local + c - 1];
  reinterpret_cast<int64_t*>(peers[r])[me * (1 + num_local) + c] = v;
}

// Per-call tables the host computes from the header, uploaded in one copy:
//   [recv_off: R + 1][expert_offsets: L + 1][expert_base: R x L][expert_count: L]
// recv_off[s]: first received row of source s; expert_base[s][j]: rows of local expert j
// from the sources before s.
struct Tables {
  int64_t recv_off, expert_off, expert_base, expert_count, total;
};
Tables tables_layout(int R, int L) {
  Tables t;
  t.recv_off = 0;
  t.expert_off = R + 1;
  t.expert_base = t.expert_off + L + 1;
  t.expert_count = t.expert_base + static_cast<int64_t>(R) * L;
  t.total = t.expert_count + L;
  return t;
}

__device__ __forceinline__ int source_of(const int64_t* recv_off, int num_ranks, int64_t i) {
  int s = 0;
  while (s + 1 < num_ranks && recv_off[s + 1] <= i) ++s;
  return s;
}

struct ReceiveParams {
  const uint8_t* window;  // own window base
  const int64_t* tables;  // Tables layout
  uint8_t* recv_x;
  float* recv_scales;     // nullptr unless FP8
  int32_t* src_rank;
  int32_t* src_token;
  int64_t* topk_local;    // [M x K]
  float* topk_weights;    // [M x K]
  int32_t* row_token;     // [P]
  int32_t* row_slot;      // [P]
  int32_t* slot_row;      // [M x K]
  uint8_t* expert_x;
  float* expert_scales;   // nullptr unless FP8
  int64_t num_recv, row_bytes, num_scales, window_slots, max_tokens;
  Tables tab;
  SlotFormat fmt;
  int num_ranks, me, top_k, max_top_k, num_local;
};

// One warp per received token (canonical order, grid-stride): metadata, then the row read
// once and written to recv_x and to each of its expert-major rows.
template <class W>
__global__ void __launch_bounds__(kCopyThreads, 1) receive_kernel(ReceiveParams p) {
  __shared__ uint8_t* s_dst[kCopyWarps][1 + kMaxTopK];
  __shared__ int64_t s_row[kCopyWarps][1 + kMaxTopK];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kCopyWarps;
  const int64_t* recv_off = p.tables + p.tab.recv_off;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kCopyWarps + warp; i < p.num_recv; i += warps) {
    const int s = source_of(recv_off, p.num_ranks, i);
    const uint8_t* slot = p.window + p.window_slots + (s * p.max_tokens + (i - recv_off[s])) * p.fmt.bytes;
    const int32_t* meta = reinterpret_cast<const int32_t*>(slot + p.fmt.meta);
    int64_t row = -1;
    if (lane < p.top_k) {
      const int32_t e = meta[1 + lane];
      const bool local = e >= 0 && e / p.num_local == p.me;
      const int64_t j = local ? e - static_cast<int64_t>(p.me) * p.num_local : -1;
      if (local)
        row = p.tables[p.tab.expert_off + j] + p.tables[p.tab.expert_base + s * p.num_local + j] +
              meta[1 + 2 * p.max_top_k + lane];
      p.topk_local[i * p.top_k + lane] = j;
      p.topk_weights[i * p.top_k + lane] = reinterpret_cast<const float*>(meta + 1 + p.max_top_k)[lane];
      p.slot_row[i * p.top_k + lane] = static_cast<int32_t>(row);
      if (row >= 0) {
        p.row_token[row] = static_cast<int32_t>(i);
        p.row_slot[row] = lane;
      }
    }
    if (lane == 0) {
      p.src_rank[i] = s;
      p.src_token[i] = meta[0];
      s_dst[warp][0] = p.recv_x + i * p.row_bytes;
      s_row[warp][0] = i;
    }
    const unsigned mask = __ballot_sync(0xffffffffu, row >= 0);
    const int nd = 1 + __popc(mask);
    if (row >= 0) {
      const int d = 1 + __popc(mask & ((1u << lane) - 1));
      s_dst[warp][d] = p.expert_x + row * p.row_bytes;
      s_row[warp][d] = row;
    }
    __syncwarp();
    copy_row(reinterpret_cast<const W*>(slot), p.row_bytes / static_cast<int64_t>(sizeof(W)), s_dst[warp], nd, lane);
    if (p.recv_scales != nullptr)
      for (int64_t j = lane; j < p.num_scales; j += 32) {
        const float v = reinterpret_cast<const float*>(slot + p.fmt.scales)[j];
        p.recv_scales[i * p.num_scales + j] = v;
        for (int d = 1; d < nd; ++d) p.expert_scales[s_row[warp][d] * p.num_scales + j] = v;
      }
    __syncwarp();
  }
}

// Block j: the padding rows of local expert j (after its received rows up to the next
// expert's offset): token and slot -1, payload and scales zero.
template <class W>
__global__ void padding_kernel(const int64_t* tables, Tables tab, int32_t* row_token, int32_t* row_slot,
                               uint8_t* expert_x, float* expert_scales, int64_t row_bytes, int64_t num_scales) {
  const int j = blockIdx.x;
  const int64_t first = tables[tab.expert_off + j] + tables[tab.expert_count + j], end = tables[tab.expert_off + j + 1];
  const int64_t n = row_bytes / static_cast<int64_t>(sizeof(W));
  for (int64_t row = first; row < end; ++row) {
    if (threadIdx.x == 0) row_token[row] = row_slot[row] = -1;
    W* out = reinterpret_cast<W*>(expert_x + row * row_bytes);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = W{};
    if (expert_scales != nullptr)
      for (int64_t i = threadIdx.x; i < num_scales; i += blockDim.x) expert_scales[row * num_scales + i] = 0.0f;
  }
}

struct PartialParams {
  const uint8_t* expert_out;  // [P x H]
  const float* weights;       // [M x K] or nullptr
  const int32_t* slot_row;    // [M x K]
  const int64_t* recv_off;    // [R + 1]
  uint8_t* const* peers;
  int64_t num_recv, hidden, window_combine, max_tokens;
  int num_ranks, me, top_k;
};

// One warp per received token (grid-stride): sum_k w_k * out[row_k] (k ascending, FP32, no
// FMA), stored in the payload type into the source's combine window slot [me][index at the
// source's send].
template <class E, bool kVec>
__global__ void __launch_bounds__(kCopyThreads, 1) combine_partial_kernel(PartialParams p) {
  __shared__ const uint8_t* s_src[kCopyWarps][kMaxTopK];
  __shared__ float s_w[kCopyWarps][kMaxTopK];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kCopyWarps;
  const int64_t row_bytes = p.hidden * static_cast<int64_t>(sizeof(E));
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kCopyWarps + warp; i < p.num_recv; i += warps) {
    const int s = source_of(p.recv_off, p.num_ranks, i);
    const int32_t row = lane < p.top_k ? p.slot_row[i * p.top_k + lane] : -1;
    const unsigned mask = __ballot_sync(0xffffffffu, row >= 0);
    if (row >= 0) {
      const int a = __popc(mask & ((1u << lane) - 1));
      s_src[warp][a] = p.expert_out + row * row_bytes;
      s_w[warp][a] = p.weights ? p.weights[i * p.top_k + lane] : 1.0f;
    }
    __syncwarp();
    uint8_t* dst = p.peers[s] + p.window_combine + (p.me * p.max_tokens + (i - p.recv_off[s])) * row_bytes;
    sum_rows<E, kVec>(s_src[warp], s_w[warp], __popc(mask), dst, p.hidden / Words<E, kVec>::kElems, lane);
    __syncwarp();
  }
}

struct ReduceParams {
  const uint8_t* window;    // own window base
  const uint8_t* in_rank;   // [T x R]
  const int32_t* pos;       // [T x R]
  uint8_t* y;               // [T x H]
  int64_t num_tokens, hidden, window_combine, max_tokens;
  int num_ranks;
};

// One warp per own token (grid-stride): the partials of the ranks it went to, ranks
// ascending (FP32).
template <class E, bool kVec>
__global__ void __launch_bounds__(kCopyThreads, 1) combine_reduce_kernel(ReduceParams p) {
  __shared__ const uint8_t* s_src[kCopyWarps][kMaxRanks];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kCopyWarps;
  const int64_t row_bytes = p.hidden * static_cast<int64_t>(sizeof(E));
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kCopyWarps + warp; t < p.num_tokens; t += warps) {
    const bool from = lane < p.num_ranks && p.in_rank[t * p.num_ranks + lane];
    const unsigned mask = __ballot_sync(0xffffffffu, from);
    if (from)
      s_src[warp][__popc(mask & ((1u << lane) - 1))] =
          p.window + p.window_combine + (lane * p.max_tokens + p.pos[t * p.num_ranks + lane]) * row_bytes;
    __syncwarp();
    sum_rows<E, kVec>(s_src[warp], nullptr, __popc(mask), p.y + t * row_bytes, p.hidden / Words<E, kVec>::kElems,
                      lane);
    __syncwarp();
  }
}

// Keeps b when it holds at least `bytes` on the current device, else allocates.
void ensure_bytes(cuda::DeviceBuffer& b, size_t bytes) {
  if (b.data() == nullptr || b.bytes() < bytes || b.device() != cuda::current_device()) b = cuda::DeviceBuffer(bytes);
}

unsigned grid_of(int64_t work_items, int per_block, int budget) {
  const int64_t need = (work_items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(need, budget)));
}

// Launches kernel<W> for the word size w (16, 4 or 1 bytes).
#define SY_LAUNCH_BY_WORD(w, kernel, grid, block, stream, ...)              \
  do {                                                                      \
    if ((w) == 16)                                                          \
      kernel<uint4><<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);         \
    else if ((w) == 4)                                                      \
      kernel<uint32_t><<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);      \
    else                                                                    \
      kernel<uint8_t><<<(grid), (block), 0, (stream)>>>(__VA_ARGS__);       \
  } while (0)

}  // namespace

struct IntranodeHandle::Plan {
  int64_t num_tokens = 0, num_recv = 0;
  int top_k = 0;
  cuda::DeviceBuffer in_rank;   // [T x R] uint8
  cuda::DeviceBuffer send_pos;  // [T x R] int32
  cuda::DeviceBuffer tables;    // Tables layout (recv_off first)
  cuda::DeviceBuffer slot_row;  // [M x K] int32
  int64_t num_expert_rows = 0;
};

int64_t IntranodeHandle::num_tokens() const { return plan_ ? plan_->num_tokens : 0; }
int64_t IntranodeHandle::num_recv_tokens() const { return plan_ ? plan_->num_recv : 0; }

struct IntranodeBuffer::State {
  std::shared_ptr<comm::Communicator> host;
  IntranodeOptions options;
  int R = 0, me = 0, L = 0, device_sms = 0, num_sms = 0;
  SlotFormat fmt;
  int64_t window_header = 0, window_slots = 0, window_combine = 0;
  cuda::DeviceBuffer window;
  std::unique_ptr<comm::IpcPeerMemory> ipc;
  cuda::DeviceBuffer peers;     // [R] uint8_t* (device)
  cuda::DeviceBuffer node_of;   // [R] int32, all 0
  cuda::PinnedBuffer staging;   // host side of the small per-call copies
  // Per-call scratch of the send phase, kept so an async call frees nothing (cudaFree would
  // synchronize the device): layout counts, error slot, scan totals, expert positions.
  cuda::DeviceBuffer per_rank, per_node, per_expert, err, totals, epos;
  std::vector<cuda::Event> ev;  // [6]: layout start, send start/end, receive start/end, spare
  bool timed_layout = false;
  // The last call's completion when it was async: the next call waits for it and (several
  // ranks) enters the deferred window-free barrier.
  std::shared_ptr<cuda::Event> pending;

  int budget(int requested) const {
    const int n = requested == 0 ? num_sms : requested < 0 ? device_sms : requested;
    return std::min(n, device_sms);
  }

  // Waits for this rank's kernels, then for every rank (host barrier; none at world size 1).
  void fence(cudaStream_t stream, const char* what) {
    SY_CUDA_CHECK(cudaStreamSynchronize(stream), "gpu " << what << " on rank " << me);
    if (R > 1) host->barrier();
  }

  // Before a call touches the window: the previous async call's receive work is complete on
  // every rank. At world size 1 the stream only waits for the event.
  void finish_pending(cudaStream_t stream, const char* what) {
    if (!pending) return;
    std::shared_ptr<cuda::Event> p = std::move(pending);
    if (R == 1) {
      SY_CUDA_CHECK(cudaStreamWaitEvent(stream, p->get(), 0), "gpu " << what << ": wait for the previous call");
      return;
    }
    p->synchronize();
    host->barrier();
  }

  // Ends a call: records `done` (reused when nobody else holds it); synchronous calls fence
  // now, async calls leave the fence to the next call.
  void finish(cudaStream_t stream, bool async, std::shared_ptr<cuda::Event>& done, const char* what) {
    if (!done || done.use_count() > 1) done = std::make_shared<cuda::Event>(false);
    done->record(stream);
    if (async)
      pending = done;
    else
      fence(stream, what);
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
  SY_REQUIRE(options.max_top_k >= 1 && options.max_top_k <= kMaxTopK,
             "IntranodeBuffer: max_top_k = " << options.max_top_k << " is outside [1, " << kMaxTopK << "]");
  if (s.R > kMaxRanks)
    SY_THROW(Unsupported, "IntranodeBuffer: " << s.R << " ranks; the GPU path handles at most " << kMaxRanks);
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
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&s.device_sms, cudaDevAttrMultiProcessorCount, cuda::current_device()),
                "IntranodeBuffer: SM count");
  s.num_sms = s.budget(options.num_sms <= 0 ? -1 : options.num_sms);
  s.fmt = slot_format(options.hidden, options.max_top_k);
  s.window_header = round_up(static_cast<int64_t>(s.R) * (1 + s.L) * 8, 256);
  s.window_slots = s.window_header;
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
  // Staging: [error: 1][header: R x (1 + L)][tables]
  s.staging = cuda::PinnedBuffer((1 + s.R * (1 + s.L) + tables_layout(s.R, s.L).total) * sizeof(int64_t));
  s.per_rank = cuda::DeviceBuffer(s.R * sizeof(int64_t));
  s.per_node = cuda::DeviceBuffer(sizeof(int64_t));
  s.per_expert = cuda::DeviceBuffer(options.num_experts * sizeof(int64_t));
  s.err = cuda::DeviceBuffer(sizeof(int64_t));
  s.totals = cuda::DeviceBuffer(s.R * sizeof(int64_t));
  s.epos = cuda::DeviceBuffer(options.max_tokens_per_rank * options.max_top_k * sizeof(int32_t));
  for (int i = 0; i < 6; ++i) s.ev.emplace_back(true);
  SY_CUDA_CHECK(cudaDeviceSynchronize(), "IntranodeBuffer: setup");
  s.host->barrier();
}

IntranodeBuffer::~IntranodeBuffer() {
  // Peers may still map this window: keep it until every rank closed its mappings.
  try {
    if (state_->pending) state_->pending->synchronize();
    state_->pending.reset();
    state_->ipc.reset();
    state_->host->barrier();
  } catch (const std::exception& e) {
    SY_WARN("dispatch", "IntranodeBuffer: teardown barrier failed: " << e.what());
  }
}

int IntranodeBuffer::rank() const { return state_->me; }
int IntranodeBuffer::num_ranks() const { return state_->R; }
int IntranodeBuffer::num_local_experts() const { return state_->L; }
int IntranodeBuffer::num_sms() const { return state_->num_sms; }

double IntranodeBuffer::last_kernel_us() const {
  const State& s = *state_;
  s.ev[4].synchronize();
  return 1000.0 * (s.ev[2].elapsed_ms_since(s.ev[1]) + s.ev[4].elapsed_ms_since(s.ev[3]));
}

double IntranodeBuffer::last_layout_us() const {
  const State& s = *state_;
  if (!s.timed_layout) return 0.0;
  s.ev[1].synchronize();
  return 1000.0 * s.ev[1].elapsed_ms_since(s.ev[0]);
}

DeviceDispatchResult IntranodeBuffer::dispatch(const DeviceDispatchArgs& args) {
  DeviceDispatchResult res;
  dispatch(args, res);
  return res;
}

DeviceCombineResult IntranodeBuffer::combine(const DeviceCombineArgs& args) {
  DeviceCombineResult res;
  combine(args, res);
  return res;
}

void IntranodeBuffer::dispatch(const DeviceDispatchArgs& args, DeviceDispatchResult& res) {
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
  const int ctas = s.budget(args.num_sms);
  s.finish_pending(st, "dispatch");

  // The previous result's plan is reused when no other handle shares it.
  std::shared_ptr<IntranodeHandle::Plan> plan;
  if (res.handle.plan_ && res.handle.plan_.use_count() == 1)
    plan = std::const_pointer_cast<IntranodeHandle::Plan>(std::move(res.handle.plan_));
  else
    plan = std::make_shared<IntranodeHandle::Plan>();
  res.handle.plan_.reset();
  plan->num_tokens = T;
  plan->top_k = K;
  const int64_t Tn = std::max<int64_t>(T, 1);
  ensure_bytes(plan->in_rank, Tn * R);
  ensure_bytes(plan->send_pos, Tn * R * sizeof(int32_t));
  cuda::DeviceBuffer &per_rank = s.per_rank, &per_expert = s.per_expert, &err = s.err, &epos = s.epos;
  DeviceLayoutOutputs lo;
  lo.num_tokens_per_rank = per_rank.as<int64_t>();
  lo.num_tokens_per_node = s.per_node.as<int64_t>();
  lo.num_tokens_per_expert = per_expert.as<int64_t>();
  lo.is_token_in_rank = plan->in_rank.as<uint8_t>();
  lo.error = err.as<int64_t>();
  s.ev[0].record(st);
  s.timed_layout = true;
  launch_dispatch_layout(args.topk_idx, T, K, s.options.num_experts, R, s.node_of.as<int32_t>(), 1, lo, st);
  if (T > 0) {
    positions_kernel<<<R + s.options.num_experts, kScanThreads, 0, st>>>(
        plan->in_rank.as<uint8_t>(), args.topk_idx, T, R, K, plan->send_pos.as<int32_t>(), s.totals.as<int64_t>(),
        epos.as<int32_t>());
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: send and expert positions");
  }
  s.ev[1].record(st);
  const int64_t row_bytes = H * static_cast<int64_t>(eb);
  if (T > 0) {
    SendParams p{};
    p.x = static_cast<const uint8_t*>(args.x);
    p.x_scales = fp8 ? args.x_scales : nullptr;
    p.topk_idx = args.topk_idx;
    p.topk_weights = args.topk_weights;
    p.epos = epos.as<int32_t>();
    p.in_rank = plan->in_rank.as<uint8_t>();
    p.pos = plan->send_pos.as<int32_t>();
    p.peers = s.peers.as<uint8_t* const>();
    p.num_tokens = T;
    p.row_bytes = row_bytes;
    p.num_scales = S;
    p.window_slots = s.window_slots;
    p.max_tokens = Tmax;
    p.fmt = s.fmt;
    p.num_ranks = R;
    p.me = me;
    p.top_k = K;
    p.max_top_k = s.options.max_top_k;
    const int w = word_bytes(row_bytes, {args.x});  // slots are 16-byte aligned
    SY_LAUNCH_BY_WORD(w, send_kernel, grid_of(T, kCopyWarps, ctas), kCopyThreads, st, p);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: send rows");
  }
  {
    const int n = R * (1 + L);
    send_counts_kernel<<<(n + 255) / 256, 256, 0, st>>>(s.peers.as<uint8_t* const>(), per_rank.as<int64_t>(),
                                                        per_expert.as<int64_t>(), R, L, me);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: send counts");
  }
  s.ev[2].record(st);
  int64_t* stage = s.staging.as<int64_t>();
  int64_t* header = stage + 1;
  const size_t header_bytes = static_cast<size_t>(R) * (1 + L) * sizeof(int64_t);
  SY_CUDA_CHECK(cudaMemcpyAsync(stage, err.data(), sizeof(int64_t), cudaMemcpyDeviceToHost, st), "dispatch: error");
  if (R == 1)  // the only writer of this header is this stream's own counts kernel
    SY_CUDA_CHECK(cudaMemcpyAsync(header, s.window.data(), header_bytes, cudaMemcpyDeviceToHost, st), "dispatch: header");
  SY_CUDA_CHECK(cudaStreamSynchronize(st), "gpu dispatch (send) on rank " << me);
  if (stage[0] != -1) {
    const int64_t bad = stage[0];
    SY_THROW(InvalidArgument, "gpu dispatch on rank " << me << ": topk_idx[" << bad / K << "][" << bad % K
                                                      << "] is out of range [-1, " << s.options.num_experts
                                                      << ") or repeats an expert of its row");
  }
  if (R > 1) {
    s.host->barrier();
    s.window.copy_to_host(header, header_bytes);
  }

  // Sizes and tables from the header: canonical order = sources ascending; within an
  // expert, sources ascending, then the source's token order (epos).
  const Tables tab = tables_layout(R, L);
  int64_t* tables = header + R * (1 + L);
  int64_t* recv_off = tables + tab.recv_off;
  int64_t* e_off = tables + tab.expert_off;
  int64_t* e_base = tables + tab.expert_base;
  int64_t* e_count = tables + tab.expert_count;
  recv_off[0] = 0;
  for (int r = 0; r < R; ++r) recv_off[r + 1] = recv_off[r] + header[r * (1 + L)];
  for (int j = 0; j < L; ++j) {
    int64_t c = 0;
    for (int r = 0; r < R; ++r) {
      e_base[r * L + j] = c;
      c += header[r * (1 + L) + 1 + j];
    }
    e_count[j] = c;
  }
  res.dtype = args.dtype;
  res.num_recv_tokens_per_expert.assign(e_count, e_count + L);
  res.expert_offsets.assign(L + 1, 0);
  for (int j = 0; j < L; ++j) res.expert_offsets[j + 1] = res.expert_offsets[j] + round_up(e_count[j], args.expert_alignment);
  std::copy(res.expert_offsets.begin(), res.expert_offsets.end(), e_off);
  const int64_t M = recv_off[R], P = res.expert_offsets[L];
  plan->num_recv = M;
  plan->num_expert_rows = P;
  ensure_bytes(plan->tables, tab.total * sizeof(int64_t));
  SY_CUDA_CHECK(cudaMemcpyAsync(plan->tables.data(), tables, tab.total * sizeof(int64_t), cudaMemcpyHostToDevice, st),
                "dispatch: tables");

  res.num_recv_tokens = M;
  const int64_t Mn = std::max<int64_t>(M, 1), Pn = std::max<int64_t>(P, 1);
  ensure_bytes(res.recv_x, Mn * row_bytes);
  if (fp8) ensure_bytes(res.recv_x_scales, Mn * S * sizeof(float));
  ensure_bytes(res.recv_src_rank, Mn * sizeof(int32_t));
  ensure_bytes(res.recv_src_token, Mn * sizeof(int32_t));
  ensure_bytes(res.recv_topk_idx, Mn * K * sizeof(int64_t));
  ensure_bytes(res.recv_topk_weights, Mn * K * sizeof(float));
  ensure_bytes(res.expert_row_token, Pn * sizeof(int32_t));
  ensure_bytes(res.expert_row_slot, Pn * sizeof(int32_t));
  ensure_bytes(res.expert_x, Pn * row_bytes);
  if (fp8) ensure_bytes(res.expert_x_scales, Pn * S * sizeof(float));
  ensure_bytes(plan->slot_row, Mn * K * sizeof(int32_t));
  s.ev[3].record(st);
  if (M > 0) {
    ReceiveParams g{};
    g.window = s.window.as<uint8_t>();
    g.tables = plan->tables.as<int64_t>();
    g.recv_x = res.recv_x.as<uint8_t>();
    g.recv_scales = fp8 ? res.recv_x_scales.as<float>() : nullptr;
    g.src_rank = res.recv_src_rank.as<int32_t>();
    g.src_token = res.recv_src_token.as<int32_t>();
    g.topk_local = res.recv_topk_idx.as<int64_t>();
    g.topk_weights = res.recv_topk_weights.as<float>();
    g.row_token = res.expert_row_token.as<int32_t>();
    g.row_slot = res.expert_row_slot.as<int32_t>();
    g.slot_row = plan->slot_row.as<int32_t>();
    g.expert_x = res.expert_x.as<uint8_t>();
    g.expert_scales = fp8 ? res.expert_x_scales.as<float>() : nullptr;
    g.num_recv = M;
    g.row_bytes = row_bytes;
    g.num_scales = S;
    g.window_slots = s.window_slots;
    g.max_tokens = Tmax;
    g.tab = tab;
    g.fmt = s.fmt;
    g.num_ranks = R;
    g.me = me;
    g.top_k = K;
    g.max_top_k = s.options.max_top_k;
    g.num_local = L;
    const int w = word_bytes(row_bytes, {});  // slots and outputs are 16-byte aligned
    SY_LAUNCH_BY_WORD(w, receive_kernel, grid_of(M, kCopyWarps, ctas), kCopyThreads, st, g);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: receive rows");
  }
  if (P > std::accumulate(e_count, e_count + L, int64_t{0})) {
    const int w = word_bytes(row_bytes, {});
    SY_LAUNCH_BY_WORD(w, padding_kernel, L, 256, st, plan->tables.as<int64_t>(), tab, res.expert_row_token.as<int32_t>(),
                      res.expert_row_slot.as<int32_t>(), res.expert_x.as<uint8_t>(),
                      fp8 ? res.expert_x_scales.as<float>() : nullptr, row_bytes, S);
    SY_CUDA_CHECK_LAUNCH("gpu dispatch: padding rows");
  }
  s.ev[4].record(st);
  s.finish(st, args.async, res.done, "dispatch (receive)");
  res.handle.plan_ = std::move(plan);
}

void IntranodeBuffer::combine(const DeviceCombineArgs& args, DeviceCombineResult& res) {
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
  const int ctas = s.budget(args.num_sms);
  s.finish_pending(st, "combine");
  res.dtype = args.dtype;
  ensure_bytes(res.y, std::max<int64_t>(plan.num_tokens, 1) * H * eb);
  // 16-byte words when every row and pointer allows (window slots and y are 16-byte aligned).
  const bool vec = word_bytes(H * eb, {args.expert_out}) == 16;
  s.timed_layout = false;
  s.ev[1].record(st);
  if (plan.num_recv > 0) {
    PartialParams p{};
    p.expert_out = static_cast<const uint8_t*>(args.expert_out);
    p.weights = args.weights;
    p.slot_row = plan.slot_row.as<int32_t>();
    p.recv_off = plan.tables.as<int64_t>();  // recv_off leads the tables
    p.peers = s.peers.as<uint8_t* const>();
    p.num_recv = plan.num_recv;
    p.hidden = H;
    p.window_combine = s.window_combine;
    p.max_tokens = s.options.max_tokens_per_rank;
    p.num_ranks = R;
    p.me = me;
    p.top_k = plan.top_k;
    const unsigned grid = grid_of(plan.num_recv, kCopyWarps, ctas);
    if (bf16 && vec)
      combine_partial_kernel<uint16_t, true><<<grid, kCopyThreads, 0, st>>>(p);
    else if (bf16)
      combine_partial_kernel<uint16_t, false><<<grid, kCopyThreads, 0, st>>>(p);
    else if (vec)
      combine_partial_kernel<float, true><<<grid, kCopyThreads, 0, st>>>(p);
    else
      combine_partial_kernel<float, false><<<grid, kCopyThreads, 0, st>>>(p);
    SY_CUDA_CHECK_LAUNCH("gpu combine: partial sums");
  }
  s.ev[2].record(st);
  // Several ranks: every partial must have landed before anyone reduces. At world size 1
  // the stream order is enough.
  if (R > 1) s.fence(st, "combine (send)");
  s.ev[3].record(st);
  if (plan.num_tokens > 0) {
    ReduceParams r{};
    r.window = s.window.as<uint8_t>();
    r.in_rank = plan.in_rank.as<uint8_t>();
    r.pos = plan.send_pos.as<int32_t>();
    r.y = res.y.as<uint8_t>();
    r.num_tokens = plan.num_tokens;
    r.hidden = H;
    r.window_combine = s.window_combine;
    r.max_tokens = s.options.max_tokens_per_rank;
    r.num_ranks = R;
    const unsigned grid = grid_of(plan.num_tokens, kCopyWarps, ctas);
    if (bf16 && vec)
      combine_reduce_kernel<uint16_t, true><<<grid, kCopyThreads, 0, st>>>(r);
    else if (bf16)
      combine_reduce_kernel<uint16_t, false><<<grid, kCopyThreads, 0, st>>>(r);
    else if (vec)
      combine_reduce_kernel<float, true><<<grid, kCopyThreads, 0, st>>>(r);
    else
      combine_reduce_kernel<float, false><<<grid, kCopyThreads, 0, st>>>(r);
    SY_CUDA_CHECK_LAUNCH("gpu combine: reduce at the source");
  }
  s.ev[4].record(st);
  s.finish(st, args.async, res.done, "combine (reduce)");
}

}  // namespace switchyard::dispatch::gpu
