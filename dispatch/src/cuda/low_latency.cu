// LowLatencyBuffer (low_latency.h): the low-latency dispatch and combine through CUDA IPC.
//
// dispatch: reset own counters (+ barrier) -> per expert, each token's index among this
// rank's tokens of that expert and the expert's count (one block per expert) -> one thread
// per expert claims a block of rows at the destination (atomic add on its counter) -> one
// warp per token casts its row to FP8 tile by tile (or copies BF16) and stores it into every
// (expert) row it goes to, with src rank/token, and writes a route entry per destination
// rank (its rows there and their weights, top-k order) -> token counts into the headers ->
// synchronize, barrier; the view points into this rank's window.
// combine: one warp per (source, token) that reached this rank sums its route's rows of
// expert_out (top-k order) into the source's partial slot -> synchronize, barrier -> one warp
// per own token sums the partials of the ranks it went to (ranks ascending) -> barrier.
//
// Window (per rank, 256-byte aligned parts): [count[L] int32][ntok[R] int32] | x [L x slots
// x 2H bytes] | scales [L x slots x S] | src_rank, src_token [L x slots] | route [R x Tmax]
// | partial [R x Tmax x H] BF16.
#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include <algorithm>

#include "fp8_device.cuh"
#include "row_device.cuh"
#include "switchyard/comm/cuda_ipc.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/cuda/low_latency.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch::gpu {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kScanThreads = 256;
constexpr int kMaxRanks = 32;
constexpr int kMaxK = kLowLatencyMaxTopK;  // 16
static_assert(kMaxK <= 32, "a warp holds one top-k slot per lane");

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

// One route entry per (source, token) at a destination: the token's rows there (expert
// row index j * slots + slot) and gate weights, in top-k order; n = 0: none.
struct Route {
  int32_t n;
  int32_t row[kMaxK];
  float weight[kMaxK];
};

struct Layout {
  int64_t count = 0, ntok = 0, x = 0, scales = 0, src_rank = 0, src_token = 0, route = 0, partial = 0, bytes = 0;
};

Layout make_layout(int R, int L, int64_t H, int64_t S, int64_t Tmax) {
  const int64_t slots = R * Tmax;
  Layout l;
  l.count = 0;
  l.ntok = L * 4;
  l.x = round_up((L + R) * 4, 256);
  l.scales = l.x + round_up(L * slots * 2 * H, 256);
  l.src_rank = l.scales + round_up(L * slots * S * 4, 256);
  l.src_token = l.src_rank + round_up(L * slots * 4, 256);
  l.route = l.src_token + round_up(L * slots * 4, 256);
  l.partial = l.route + round_up(R * Tmax * static_cast<int64_t>(sizeof(Route)), 256);
  l.bytes = l.partial + round_up(R * Tmax * H * 2, 256);
  return l;
}

// Block e: epos[t][k] = index of token t among the tokens selecting expert e (first slot k
// with topk_idx[t][k] == e), cnt[e] = their number.
__global__ void __launch_bounds__(kScanThreads) ll_scan_kernel(const int64_t* __restrict__ topk_idx, int64_t n,
                                                                int top_k, int32_t* __restrict__ epos,
                                                                int32_t* __restrict__ cnt) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int64_t e = blockIdx.x;
  int running = 0;
  for (int64_t base = 0; base < n; base += kScanThreads) {
    const int64_t t = base + threadIdx.x;
    int slot = -1;
    if (t < n)
      for (int k = top_k - 1; k >= 0; --k)
        if (topk_idx[t * top_k + k] == e) slot = k;
    int excl = 0, sum = 0;
    Scan(tmp).ExclusiveSum(slot >= 0 ? 1 : 0, excl, sum);
    if (slot >= 0) epos[t * top_k + slot] = running + excl;
    running += sum;
    __syncthreads();
  }
  if (threadIdx.x == 0) cnt[e] = running;
}

// Thread e: claims cnt[e] rows of local expert e % L at rank e / L (one atomic add).
__global__ void ll_claim_kernel(uint8_t* const* peers, const int32_t* cnt, int32_t* base, int num_experts,
                                int num_local) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= num_experts) return;
  base[e] = cnt[e] > 0 ? atomicAdd_system(reinterpret_cast<int*>(peers[e / num_local]) + e % num_local, cnt[e]) : 0;
}

struct SendParams {
  const uint16_t* x;
  const int64_t* topk_idx;
  const float* topk_weights;
  const int32_t* epos;     // [T x K]
  const int32_t* base;     // [E]
  uint8_t* const* peers;   // [R]
  uint32_t* tok_ranks;     // [T] bit r: the token went to rank r
  int64_t* error;          // first bad flat index (atomicMin), all ones = none
  int64_t num_tokens, hidden, num_scales, slots, max_tokens;
  Layout lay;
  int num_ranks, me, top_k, num_experts, num_local;
  bool fp8, pow2, vec;
};

// One warp per token (grid-stride).
__global__ void __launch_bounds__(kThreads, 1) ll_send_kernel(SendParams p) {
  __shared__ uint8_t* s_dst[kWarps][kMaxK];   // row payload at the destination, compact
  __shared__ int32_t s_rank[kWarps][kMaxK];   // per slot k: destination rank, -1 = none
  __shared__ int64_t s_row[kWarps][kMaxK];    // per slot k: row at the destination
  __shared__ float s_w[kWarps][kMaxK];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  const int64_t H = p.hidden;
  const int64_t row_bytes = p.fp8 ? H : 2 * H;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp; t < p.num_tokens; t += warps) {
    bool valid = false;
    int rank = -1;
    int64_t row = -1;
    if (lane < p.top_k) {
      const int64_t e = p.topk_idx[t * p.top_k + lane];
      bool bad = e < -1 || e >= p.num_experts;
      for (int k = 0; k < lane && !bad; ++k) bad = e >= 0 && p.topk_idx[t * p.top_k + k] == e;
      if (bad) atomicMin(reinterpret_cast<unsigned long long*>(p.error), static_cast<unsigned long long>(t * p.top_k + lane));
      valid = !bad && e >= 0;
      if (valid) {
        rank = static_cast<int>(e / p.num_local);
        const int j = static_cast<int>(e % p.num_local);
        row = j * p.slots + p.base[e] + p.epos[t * p.top_k + lane];
        uint8_t* w = p.peers[rank];
        reinterpret_cast<int32_t*>(w + p.lay.src_rank)[row] = p.me;
        reinterpret_cast<int32_t*>(w + p.lay.src_token)[row] = static_cast<int32_t>(t);
      }
      s_rank[warp][lane] = rank;
      s_row[warp][lane] = row;
      s_w[warp][lane] = p.topk_weights ? p.topk_weights[t * p.top_k + lane] : 1.0f;
    }
    const unsigned mask = __ballot_sync(0xffffffffu, valid);
    const int nd = __popc(mask);
    if (valid) s_dst[warp][__popc(mask & ((1u << lane) - 1))] = p.peers[rank] + p.lay.x + row * row_bytes;
    __syncwarp();
    if (p.fp8) {
      // Tile by tile: 4 channels per lane, the scale and codes of fp8_device.cuh, stored
      // into every destination row (4-byte words; H % 4 == 0 was checked).
      for (int64_t c0 = 0, tile = 0; c0 < H; c0 += kFp8TileSize, ++tile) {
        const int n = static_cast<int>(min(static_cast<int64_t>(kFp8TileSize), H - c0));
        float v[4];
        uint32_t amax_bits = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int c = 4 * lane + j;
          v[j] = c < n ? bf16_to_float_dev(p.x[t * H + c0 + c]) : 0.0f;
          uint32_t a = __float_as_uint(v[j]) & 0x7fffffffu;
          a = a > 0x7f800000u ? 0u : a;
          amax_bits = a > amax_bits ? a : amax_bits;
        }
#pragma unroll
        for (int off = 16; off > 0; off /= 2) {
          const uint32_t o = __shfl_xor_sync(0xffffffffu, amax_bits, off);
          amax_bits = o > amax_bits ? o : amax_bits;
        }
        const float scale = tile_scale(__uint_as_float(amax_bits), p.pow2);
        const uint32_t codes = tile_codes4(v, make_tile_divider(scale));
        for (int d = 0; d < nd; ++d) {
          uint8_t* out = s_dst[warp][d] + c0;
          if (4 * lane + 3 < n)
            *reinterpret_cast<uint32_t*>(out + 4 * lane) = codes;
          else
            for (int j = 0; j < 4; ++j)
              if (4 * lane + j < n) out[4 * lane + j] = static_cast<uint8_t>(codes >> (8 * j));
        }
        if (lane < p.top_k && valid)
          reinterpret_cast<float*>(p.peers[rank] + p.lay.scales)[row * p.num_scales + tile] = scale;
      }
    } else if (p.vec) {
      copy_row(reinterpret_cast<const uint4*>(p.x + t * H), row_bytes / 16, s_dst[warp], nd, lane);
    } else {
      copy_row(p.x + t * H, H, s_dst[warp], nd, lane);
    }
    // Route entries: lane r builds destination r's (rows and weights in top-k order).
    uint32_t went = 0;
    if (lane < p.num_ranks) {
      Route* dst = reinterpret_cast<Route*>(p.peers[lane] + p.lay.route) + p.me * p.max_tokens + t;
      int n = 0;
      for (int k = 0; k < p.top_k; ++k)
        if (s_rank[warp][k] == lane) {
          dst->row[n] = static_cast<int32_t>(s_row[warp][k]);
          dst->weight[n] = s_w[warp][k];
          ++n;
        }
      dst->n = n;
      went = n > 0 ? 1u : 0u;
    }
    const unsigned ranks = __ballot_sync(0xffffffffu, went != 0);
    if (lane == 0) p.tok_ranks[t] = ranks;
    __syncwarp();  // the shared slots are rewritten for the next token
  }
}

// Thread r: this rank's token count into destination r's header.
__global__ void ll_ntok_kernel(uint8_t* const* peers, Layout lay, int num_ranks, int me, int32_t num_tokens) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < num_ranks) reinterpret_cast<int32_t*>(peers[r] + lay.ntok)[me] = num_tokens;
}

struct ExpertParams {
  const uint8_t* window;  // own
  const uint16_t* expert_out;
  uint8_t* const* peers;
  int64_t hidden, max_tokens;
  Layout lay;
  int num_ranks, me;
};

// One warp per (source p, token t) that reached this rank: sum_n w_n * expert_out[row_n] in
// the route's (top-k) order into p's partial slot [me][t], BF16.
template <bool kVec>
__global__ void __launch_bounds__(kThreads, 1) ll_expert_kernel(ExpertParams p) {
  __shared__ const uint8_t* s_src[kWarps][kMaxK];
  __shared__ float s_w[kWarps][kMaxK];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  const int32_t* ntok = reinterpret_cast<const int32_t*>(p.window + p.lay.ntok);
  const Route* route = reinterpret_cast<const Route*>(p.window + p.lay.route);
  const int64_t total = p.num_ranks * p.max_tokens, row_bytes = p.hidden * 2;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + warp; i < total; i += warps) {
    const int src = static_cast<int>(i / p.max_tokens);
    const int64_t t = i % p.max_tokens;
    if (t >= ntok[src]) continue;  // warp-uniform
    const Route& en = route[i];
    const int n = en.n;
    if (n == 0) continue;
    if (lane < n) {
      s_src[warp][lane] = reinterpret_cast<const uint8_t*>(p.expert_out) + en.row[lane] * row_bytes;
      s_w[warp][lane] = en.weight[lane];
    }
    __syncwarp();
    uint8_t* dst = p.peers[src] + p.lay.partial + (p.me * p.max_tokens + t) * row_bytes;
    sum_rows<uint16_t, kVec>(s_src[warp], s_w[warp], n, dst, p.hidden / Words<uint16_t, kVec>::kElems, lane);
    __syncwarp();
  }
}

// One warp per own token: y[t] = the partials of the ranks it went to, ranks ascending.
template <bool kVec>
__global__ void __launch_bounds__(kThreads, 1) ll_reduce_kernel(const uint8_t* window, Layout lay,
                                                               const uint32_t* tok_ranks, int64_t num_tokens,
                                                               int64_t hidden, int64_t max_tokens, uint16_t* y) {
  __shared__ const uint8_t* s_src[kWarps][kMaxRanks];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  const int64_t row_bytes = hidden * 2;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp; t < num_tokens; t += warps) {
    const uint32_t ranks = tok_ranks[t];
    const bool from = (ranks >> lane) & 1u;
    if (from)
      s_src[warp][__popc(ranks & ((1u << lane) - 1))] = window + lay.partial + (lane * max_tokens + t) * row_bytes;
    __syncwarp();
    sum_rows<uint16_t, kVec>(s_src[warp], nullptr, __popc(ranks), reinterpret_cast<uint8_t*>(y + t * hidden),
                             hidden / Words<uint16_t, kVec>::kElems, lane);
    __syncwarp();
  }
}

unsigned grid_for(int64_t items, int budget) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((items + kWarps - 1) / kWarps, budget)));
}

}  // namespace

void copy_device_to_host(void* dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return;
  SY_CUDA_CHECK(cudaMemcpy(dst, device_src, bytes, cudaMemcpyDeviceToHost), "copy_device_to_host of " << bytes << " bytes");
}

struct LowLatencyBuffer::State {
  std::shared_ptr<comm::Communicator> host;
  LowLatencyOptions options;
  int R = 0, me = 0, L = 0, device_sms = 0;
  int64_t H = 0, S = 0, slots = 0;
  Layout lay;
  cuda::DeviceBuffer window;
  std::unique_ptr<comm::IpcPeerMemory> ipc;
  cuda::DeviceBuffer peers;                              // [R] uint8_t*
  cuda::DeviceBuffer epos, cnt, base, tok_ranks, error;  // send scratch
  cuda::DeviceBuffer y;                                  // [Tmax x H] BF16
  cuda::PinnedBuffer staging;                            // the error slot
  int64_t T = -1;                                        // tokens of the last dispatch (-1: none)
  int K = 0;

  int budget(int requested) const {
    const int n = requested == 0 ? options.num_sms : requested;
    return n <= 0 ? device_sms : std::min(n, device_sms);
  }
  void fence(cudaStream_t st, const char* what) {
    SY_CUDA_CHECK(cudaStreamSynchronize(st), "gpu low-latency " << what << " on rank " << me);
    if (R > 1) host->barrier();
  }
};

LowLatencyBuffer::LowLatencyBuffer(std::shared_ptr<comm::Communicator> host, const LowLatencyOptions& options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  SY_REQUIRE(host != nullptr, "LowLatencyBuffer: host communicator is null");
  s.host = std::move(host);
  s.options = options;
  s.R = s.host->size();
  s.me = s.host->rank();
  SY_REQUIRE(options.num_experts > 0 && options.num_experts % s.R == 0,
             "LowLatencyBuffer: num_experts = " << options.num_experts << " is not a positive multiple of the " << s.R
                                                << " ranks");
  SY_REQUIRE(options.hidden > 0, "LowLatencyBuffer: hidden = " << options.hidden << " must be > 0");
  SY_REQUIRE(options.max_tokens > 0, "LowLatencyBuffer: max_tokens = " << options.max_tokens << " must be > 0");
  if (s.R > kMaxRanks)
    SY_THROW(Unsupported, "LowLatencyBuffer: " << s.R << " ranks; the GPU path handles at most " << kMaxRanks);
  if (s.host->rank_map().num_nodes() != 1)
    SY_THROW(Unsupported, "LowLatencyBuffer: the group spans " << s.host->rank_map().num_nodes()
                                                               << " nodes; the GPU path is intra-node only");
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "LowLatencyBuffer: no GPU is usable on this machine");
  const int64_t mine[3] = {options.num_experts, options.hidden, options.max_tokens};
  std::vector<int64_t> all(3 * s.R);
  s.host->all_gather(mine, all.data(), 3, comm::DataType::kInt64);
  for (int r = 0; r < s.R; ++r)
    if (!std::equal(mine, mine + 3, all.begin() + 3 * r))
      SY_THROW(InvalidArgument, "LowLatencyBuffer on rank " << s.me << ": rank " << r
                                                            << " uses different options (experts, hidden, max_tokens)");
  SY_CUDA_CHECK(cudaDeviceGetAttribute(&s.device_sms, cudaDevAttrMultiProcessorCount, cuda::current_device()),
                "LowLatencyBuffer: SM count");
  s.L = options.num_experts / s.R;
  s.H = options.hidden;
  s.S = fp8_num_tiles(s.H);
  s.slots = s.R * options.max_tokens;
  s.lay = make_layout(s.R, s.L, s.H, s.S, options.max_tokens);
  s.window = cuda::DeviceBuffer(s.lay.bytes);
  s.window.fill_zero();
  SY_CUDA_CHECK(cudaDeviceSynchronize(), "LowLatencyBuffer: clear the window");
  s.ipc = comm::IpcPeerMemory::exchange(*s.host, s.window);
  std::vector<uint8_t*> ptrs(s.R);
  for (int r = 0; r < s.R; ++r) ptrs[r] = static_cast<uint8_t*>(s.ipc->peer(r));
  s.peers = cuda::DeviceBuffer(s.R * sizeof(uint8_t*));
  s.peers.copy_from_host(ptrs.data(), ptrs.size() * sizeof(uint8_t*));
  const int64_t Tmax = options.max_tokens;
  s.epos = cuda::DeviceBuffer(Tmax * kMaxK * sizeof(int32_t));
  s.cnt = cuda::DeviceBuffer(options.num_experts * sizeof(int32_t));
  s.base = cuda::DeviceBuffer(options.num_experts * sizeof(int32_t));
  s.tok_ranks = cuda::DeviceBuffer(Tmax * sizeof(uint32_t));
  s.error = cuda::DeviceBuffer(sizeof(int64_t));
  s.y = cuda::DeviceBuffer(Tmax * s.H * 2);
  s.staging = cuda::PinnedBuffer(sizeof(int64_t));
  SY_CUDA_CHECK(cudaDeviceSynchronize(), "LowLatencyBuffer: setup");
  s.host->barrier();
}

LowLatencyBuffer::~LowLatencyBuffer() {
  try {
    state_->ipc.reset();
    state_->host->barrier();
  } catch (const std::exception& e) {
    SY_WARN("dispatch", "LowLatencyBuffer: teardown barrier failed: " << e.what());
  }
}

int LowLatencyBuffer::num_local_experts() const { return state_->L; }

DeviceLowLatencyView LowLatencyBuffer::dispatch(const DeviceLowLatencyArgs& args) {
  State& s = *state_;
  const int R = s.R, me = s.me, L = s.L, K = args.top_k, E = s.options.num_experts;
  const int64_t T = args.num_tokens, H = s.H, Tmax = s.options.max_tokens;
  SY_REQUIRE(T >= 0 && T <= Tmax, "gpu low_latency_dispatch on rank " << me << ": num_tokens = " << T
                                                                      << " is outside [0, " << Tmax << "]");
  SY_REQUIRE(K >= 1 && K <= kMaxK,
             "gpu low_latency_dispatch on rank " << me << ": top_k = " << K << " must be in [1, " << kMaxK << "]");
  SY_REQUIRE(T == 0 || (args.x != nullptr && args.topk_idx != nullptr),
             "gpu low_latency_dispatch on rank " << me << ": x or topk_idx is null");
  SY_REQUIRE(!args.use_fp8 || H % 4 == 0,
             "gpu low_latency_dispatch on rank " << me << ": FP8 needs hidden % 4 == 0, hidden = " << H);
  cudaStream_t st = args.stream;
  const int ctas = s.budget(args.num_sms);
  // Counters back to zero before anyone claims (several ranks: a barrier after).
  SY_CUDA_CHECK(cudaMemsetAsync(s.window.as<uint8_t>() + s.lay.count, 0, L * sizeof(int32_t), st), "reset counters");
  SY_CUDA_CHECK(cudaMemsetAsync(s.error.data(), 0xff, sizeof(int64_t), st), "reset the error slot");
  if (R > 1) s.fence(st, "dispatch (reset)");
  s.T = -1;  // no valid dispatch until this one completes
  if (T > 0) {
    ll_scan_kernel<<<E, kScanThreads, 0, st>>>(args.topk_idx, T, K, s.epos.as<int32_t>(), s.cnt.as<int32_t>());
    SY_CUDA_CHECK_LAUNCH("gpu low-latency dispatch: expert positions");
    ll_claim_kernel<<<(E + 255) / 256, 256, 0, st>>>(s.peers.as<uint8_t* const>(), s.cnt.as<int32_t>(),
                                                      s.base.as<int32_t>(), E, L);
    SY_CUDA_CHECK_LAUNCH("gpu low-latency dispatch: claim rows");
    SendParams p{};
    p.x = args.x;
    p.topk_idx = args.topk_idx;
    p.topk_weights = args.topk_weights;
    p.epos = s.epos.as<int32_t>();
    p.base = s.base.as<int32_t>();
    p.peers = s.peers.as<uint8_t* const>();
    p.tok_ranks = s.tok_ranks.as<uint32_t>();
    p.error = s.error.as<int64_t>();
    p.num_tokens = T;
    p.hidden = H;
    p.num_scales = s.S;
    p.slots = s.slots;
    p.max_tokens = Tmax;
    p.lay = s.lay;
    p.num_ranks = R;
    p.me = me;
    p.top_k = K;
    p.num_experts = E;
    p.num_local = L;
    p.fp8 = args.use_fp8;
    p.pow2 = args.pow2_scales;
    p.vec = (H * 2) % 16 == 0 && reinterpret_cast<uintptr_t>(args.x) % 16 == 0;
    ll_send_kernel<<<grid_for(T, ctas), kThreads, 0, st>>>(p);
    SY_CUDA_CHECK_LAUNCH("gpu low-latency dispatch: send rows");
  }
  ll_ntok_kernel<<<1, 32, 0, st>>>(s.peers.as<uint8_t* const>(), s.lay, R, me, static_cast<int32_t>(T));
  SY_CUDA_CHECK_LAUNCH("gpu low-latency dispatch: token counts");
  int64_t* err = s.staging.as<int64_t>();
  SY_CUDA_CHECK(cudaMemcpyAsync(err, s.error.data(), sizeof(int64_t), cudaMemcpyDeviceToHost, st), "read the error");
  SY_CUDA_CHECK(cudaStreamSynchronize(st), "gpu low-latency dispatch (send) on rank " << me);
  if (*err != -1)
    SY_THROW(InvalidArgument, "gpu low_latency_dispatch on rank " << me << ": topk_idx[" << *err / K << "]["
                                                                  << *err % K << "] is out of range [-1, " << E
                                                                  << ") or repeats an expert of its row");
  if (R > 1) s.host->barrier();
  DeviceLowLatencyView v;
  v.dtype = args.use_fp8 ? comm::DataType::kFloat8E4M3 : comm::DataType::kBfloat16;
  v.slots_per_expert = s.slots;
  const uint8_t* w = s.window.as<uint8_t>();
  v.x = w + s.lay.x;
  v.scales = args.use_fp8 ? reinterpret_cast<const float*>(w + s.lay.scales) : nullptr;
  v.src_rank = reinterpret_cast<const int32_t*>(w + s.lay.src_rank);
  v.src_token = reinterpret_cast<const int32_t*>(w + s.lay.src_token);
  v.count.resize(L);
  s.window.copy_to_host(v.count.data(), L * sizeof(int32_t), s.lay.count);
  s.T = T;
  s.K = K;
  return v;
}

const uint16_t* LowLatencyBuffer::combine(const uint16_t* expert_out, cuda::StreamHandle stream, int num_sms) {
  State& s = *state_;
  const int R = s.R, me = s.me;
  SY_REQUIRE(s.T >= 0, "gpu low_latency_combine on rank " << me << ": no completed low-latency dispatch");
  SY_REQUIRE(expert_out != nullptr, "gpu low_latency_combine on rank " << me << ": expert_out is null");
  cudaStream_t st = stream;
  const int ctas = s.budget(num_sms);
  const int64_t H = s.H, Tmax = s.options.max_tokens;
  const bool vec = (H * 2) % 16 == 0 && reinterpret_cast<uintptr_t>(expert_out) % 16 == 0;
  ExpertParams p{};
  p.window = s.window.as<uint8_t>();
  p.expert_out = expert_out;
  p.peers = s.peers.as<uint8_t* const>();
  p.hidden = H;
  p.max_tokens = Tmax;
  p.lay = s.lay;
  p.num_ranks = R;
  p.me = me;
  const unsigned grid = grid_for(R * Tmax, ctas);
  if (vec)
    ll_expert_kernel<true><<<grid, kThreads, 0, st>>>(p);
  else
    ll_expert_kernel<false><<<grid, kThreads, 0, st>>>(p);
  SY_CUDA_CHECK_LAUNCH("gpu low-latency combine: expert side");
  if (R > 1) s.fence(st, "combine (expert side)");
  if (s.T > 0) {
    const unsigned g = grid_for(s.T, ctas);
    const bool yvec = (H * 2) % 16 == 0;  // window partials and y are 16-byte aligned
    if (yvec)
      ll_reduce_kernel<true><<<g, kThreads, 0, st>>>(s.window.as<uint8_t>(), s.lay, s.tok_ranks.as<uint32_t>(), s.T, H,
                                                     Tmax, s.y.as<uint16_t>());
    else
      ll_reduce_kernel<false><<<g, kThreads, 0, st>>>(s.window.as<uint8_t>(), s.lay, s.tok_ranks.as<uint32_t>(), s.T,
                                                      H, Tmax, s.y.as<uint16_t>());
    SY_CUDA_CHECK_LAUNCH("gpu low-latency combine: reduce at the source");
  }
  s.fence(st, "combine (reduce)");
  return s.y.as<uint16_t>();
}

}  // namespace switchyard::dispatch::gpu
