// Low-latency mode (decode): fixed slots, no count exchange, FP8 cast inside dispatch,
// BF16 combine with the gate weights applied on the expert side; send and receive split by
// a hook.
//
// Same-node peers (and this rank itself) are reached through the shared-memory window
// (ll_window.h): the sender casts each token once into a small staging row and writes it
// straight into the destination's expert-major output with streaming stores
// (stream_copy.h: no read for ownership of lines it never reads), one row per (token, local expert),
// DeepEP's low-latency layout; it claims a contiguous block of rows per expert with one
// fetch_add, then publishes a flag. The receive hook only waits for the flags. Ranks on
// other nodes get messages as before: one slot per (token, rank) listing its local experts
// (buffer.h has the slot layout), fanned out into the same output by the receive hook.
// Combine: the expert side sums w * out over a token's local rows (top-k order, FP32) and
// writes one BF16 row per (token, rank) into the source's window (or a message); the
// source adds the ranks in rank order (FP32). Rows of one expert are in blocks per source
// rank, the blocks in the order the sources claimed them (as in DeepEP); combine does not
// depend on that order, so it is bitwise reproducible.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>

#include "low_latency_state.h"
#include "payload.h"
#include "phase_timer.h"
#include "stream_copy.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch {

namespace {

constexpr int kTagLowLatencyDispatch = 20, kTagLowLatencyCombine = 21;
constexpr size_t kHeaderBytes = 2 * sizeof(int64_t);

// Bytes of one cross-node message slot (dedup per (token, rank)).
size_t message_slot_bytes(int64_t H, int64_t S, bool fp8) {
  return (fp8 ? static_cast<size_t>(H) + S * sizeof(float) : 2 * static_cast<size_t>(H)) + sizeof(int32_t) +
         kLowLatencyMaxTopK * (sizeof(int32_t) + sizeof(float));
}

// A window only this rank sees (the exchange has no shared memory): anonymous pages, so the
// large, sparse slot area costs nothing until rows land in it.
class PrivateWindow final : public PeerWindow {
 public:
  PrivateWindow(int me, int R, size_t bytes) : me_(me), R_(R), bytes_(bytes) {
    base_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) SY_THROW(IoError, "low_latency: rank " << me << ": cannot map " << bytes << " bytes");
  }
  ~PrivateWindow() override { munmap(base_, bytes_); }
  uint8_t* at(int rank) override { return rank == me_ && rank < R_ ? static_cast<uint8_t*>(base_) : nullptr; }
  void check_peer(int) override {}

 private:
  int me_, R_;
  void* base_;
  size_t bytes_;
};

// Typed views of one rank's areas of a parity.
struct DispatchArea {
  detail::LlFlag* flag;
  uint32_t* count;
  uint8_t* x;
  float* scales;
  int32_t* src_rank;
  int32_t* src_token;
  detail::RouteEntry* route;
};
DispatchArea dispatch_area(const detail::LlLayout& lay, uint8_t* window, int parity) {
  uint8_t* a = window + lay.dispatch_area(parity);
  return {reinterpret_cast<detail::LlFlag*>(a + lay.flags),       reinterpret_cast<uint32_t*>(a + lay.count),
          a + lay.x,
          reinterpret_cast<float*>(a + lay.scales),               reinterpret_cast<int32_t*>(a + lay.src_rank),
          reinterpret_cast<int32_t*>(a + lay.src_token),          reinterpret_cast<detail::RouteEntry*>(a + lay.route)};
}
struct CombineArea {
  detail::LlFlag* flag;
  uint16_t* partial;  // [R x Tmax x H]
};
CombineArea combine_area(const detail::LlLayout& lay, uint8_t* window, int parity) {
  uint8_t* a = window + lay.combine_area(parity);
  return {reinterpret_cast<detail::LlFlag*>(a + lay.c_flags), reinterpret_cast<uint16_t*>(a + lay.c_partial)};
}

uint32_t claim(uint32_t* counter, uint32_t n) {
  return std::atomic_ref<uint32_t>(*counter).fetch_add(n, std::memory_order_relaxed);
}

}  // namespace

LowLatencyRecvHook Buffer::low_latency_dispatch_send(const LowLatencyDispatchArgs& args) {
  if (options_.low_latency_max_tokens <= 0)
    SY_THROW(InvalidArgument, "low_latency_dispatch: the Buffer was made with low_latency_max_tokens = 0");
  LowLatencyState& st = *ll_;
  const detail::LlLayout& lay = st.layout;
  PeerExchange& ex = *exchange_;
  const int R = lay.R, me = ex.rank(), L = lay.L, K = args.top_k;
  const int64_t T = args.num_tokens, H = lay.H, S = lay.S, slots = lay.slots;
  if (T < 0 || T > lay.Tmax)
    SY_THROW(InvalidArgument, "low_latency_dispatch: num_tokens = " << T << " is outside [0, low_latency_max_tokens = "
                                                                    << lay.Tmax << "]");
  if (K < 1 || K > kLowLatencyMaxTopK)
    SY_THROW(InvalidArgument, "low_latency_dispatch: top_k = " << K << " must be in [1, " << kLowLatencyMaxTopK << "]");
  if (T > 0 && args.x == nullptr) SY_THROW(InvalidArgument, "low_latency_dispatch: x is null");
  validate_topk_idx(args.topk_idx, T, K, options_.num_experts);
  if (st.hook_outstanding) SY_THROW(InvalidArgument, "low_latency_dispatch: the previous receive hook was not called");
  if (st.broken)
    SY_THROW(InvalidArgument, "low_latency_dispatch: rank " << me
                                                            << ": an earlier low-latency call failed; make a new Buffer");
  detail::PhaseTimer timer("low-latency dispatch send");
  const uint32_t seq = ++st.dispatch_seq;
  const int b = static_cast<int>(seq & 1u);
  st.parity = b;
  st.T = T;
  st.K = K;
  st.fp8 = args.use_fp8;
  st.stats = {};
  const bool fp8 = args.use_fp8;
  const size_t payload = fp8 ? H : 2 * H, scale_bytes = fp8 ? S * sizeof(float) : 0, staged = payload + scale_bytes;
  const size_t msg_slot = message_slot_bytes(H, S, fp8);
  st.stats.row_bytes = static_cast<int64_t>(staged);

  // This rank's counters of the other parity are free again (see ll_window.h).
  std::memset(dispatch_area(lay, st.base[me], 1 - b).count, 0, L * sizeof(uint32_t));

  // Rows per (destination, local expert); tokens per destination.
  std::vector<uint32_t> rows(static_cast<size_t>(R) * L, 0), next(static_cast<size_t>(R) * L, 0);
  std::vector<int32_t> tokens(R, 0);
  for (auto& v : st.sent) v.clear();
  for (int64_t t = 0; t < T; ++t) {
    for (int k = 0; k < K; ++k) {
      const int64_t e = args.topk_idx[t * K + k];
      if (e < 0) continue;
      ++rows[e];  // e = p * L + j
      const int p = static_cast<int>(e / L);
      if (st.sent[p].empty() || st.sent[p].back() != t) st.sent[p].push_back(static_cast<int32_t>(t));
    }
  }
  for (int p = 0; p < R; ++p) tokens[p] = static_cast<int32_t>(st.sent[p].size());
  // Claim a block of rows per expert at every window destination.
  std::vector<uint32_t> first(static_cast<size_t>(R) * L, 0);
  for (int p = 0; p < R; ++p) {
    if (!st.base[p]) continue;
    uint32_t* count = dispatch_area(lay, st.base[p], b).count;
    for (int j = 0; j < L; ++j) {
      const uint32_t n = rows[static_cast<size_t>(p) * L + j];
      if (n == 0) continue;
      const uint32_t at = claim(count + j, n);
      if (at + n > static_cast<uint64_t>(slots))
        SY_THROW(InternalError, "low_latency_dispatch: rank " << me << ": expert " << j << " of rank " << p
                                                              << " overflows its " << slots << " slots");
      first[static_cast<size_t>(p) * L + j] = at;
    }
  }

  timer.lap("claims");
  // One pass over the tokens: cast once, write every window row, pack cross-node slots.
  double cast_ms = 0;
  std::vector<int64_t> msg_rows(R, 0);
  std::vector<int32_t> route_i(R, 0);
  std::vector<detail::RouteEntry> entry(R);
  std::vector<int32_t> local(static_cast<size_t>(R) * kLowLatencyMaxTopK);
  std::vector<int> touched;
  uint8_t* stage = st.token.data();
  for (int64_t t = 0; t < T; ++t) {
    if (fp8) {
      const auto c0 = timer.on() ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      quantize_fp8_tiles(args.x + t * H, 1, H, args.pow2_scales, stage, reinterpret_cast<float*>(stage + H));
      if (timer.on()) cast_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
    } else {
      std::memcpy(stage, args.x + t * H, payload);
    }
    touched.clear();
    for (int k = 0; k < K; ++k) {
      const int64_t e = args.topk_idx[t * K + k];
      if (e < 0) continue;
      const int p = static_cast<int>(e / L), j = static_cast<int>(e % L);
      detail::RouteEntry& en = entry[p];
      if (std::find(touched.begin(), touched.end(), p) == touched.end()) {
        touched.push_back(p);
        en.token = static_cast<int32_t>(t);
        en.n = 0;
      }
      const float w = args.topk_weights ? args.topk_weights[t * K + k] : 1.0f;
      if (st.base[p]) {
        DispatchArea d = dispatch_area(lay, st.base[p], b);
        const size_t c = static_cast<size_t>(p) * L + j;
        const int64_t row = static_cast<int64_t>(j) * slots + first[c] + next[c]++;
        detail::stream_copy(d.x + row * payload, stage, payload);
        if (fp8) std::memcpy(d.scales + row * S, stage + H, scale_bytes);
        d.src_rank[row] = me;
        d.src_token[row] = static_cast<int32_t>(t);
        en.row[en.n] = static_cast<int32_t>(row);
      } else {
        en.row[en.n] = j;  // local expert id at the destination
      }
      en.weight[en.n] = w;
      ++en.n;
    }
    for (int p : touched) {
      detail::RouteEntry& en = entry[p];
      st.stats.logical_bytes += static_cast<int64_t>(en.n * staged);
      if (st.base[p]) {
        dispatch_area(lay, st.base[p], b).route[static_cast<int64_t>(me) * lay.Tmax + route_i[p]++] = en;
      } else {
        // Cross-node slot: [payload][scales][int32 token][int32 local[16]][float w[16]].
        uint8_t* s = st.send[p].data() + kHeaderBytes + msg_rows[p]++ * msg_slot;
        int32_t loc[kLowLatencyMaxTopK];
        float w[kLowLatencyMaxTopK];
        for (int n = 0; n < kLowLatencyMaxTopK; ++n) {
          loc[n] = n < en.n ? en.row[n] : -1;
          w[n] = n < en.n ? en.weight[n] : 0.f;
        }
        std::memcpy(s, stage, staged);
        std::memcpy(s + staged, &en.token, sizeof(int32_t));
        std::memcpy(s + staged + sizeof(int32_t), loc, sizeof(loc));
        std::memcpy(s + staged + sizeof(int32_t) + sizeof(loc), w, sizeof(w));
      }
    }
  }

  timer.lap("cast + rows");
  timer.add("of which cast", cast_ms);
  // Publish: window destinations get the flag, the others a message. The streamed row
  // stores must be visible before any flag.
  detail::stream_fence();
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p = 0; p < R; ++p) {
    if (st.base[p]) {
      detail::LlFlag* f = dispatch_area(lay, st.base[p], b).flag + me;
      f->tokens = tokens[p];
      f->hidden = static_cast<int32_t>(H);
      f->fp8 = fp8 ? 1 : 0;
      if (p != me) {
        detail::post_flag(f, seq);
        st.stats.control_bytes += sizeof(detail::LlFlag);
      }
      continue;
    }
    const int64_t header[2] = {msg_rows[p], H};
    std::memcpy(st.send[p].data(), header, sizeof(header));
    const size_t bytes = kHeaderBytes + msg_rows[p] * msg_slot;
    sends.push_back({p, st.send[p].data(), bytes});
    recvs.push_back({p, st.recv[p].data(), kHeaderBytes + lay.Tmax * msg_slot});
    st.stats.control_bytes += kHeaderBytes;
    if (!ex.rank_map().same_node(me, p)) st.stats.wire_bytes += static_cast<int64_t>(msg_rows[p] * msg_slot);
  }
  st.pending = sends.empty() && recvs.empty() ? nullptr : ex.post(sends, recvs, kTagLowLatencyDispatch);
  st.hook_outstanding = true;
  timer.lap("publish");

  return [this, seq, b, fp8, payload, staged, msg_slot] {
    LowLatencyState& s = *ll_;
    const detail::LlLayout& ly = s.layout;
    const int me2 = exchange_->rank();
    if (!s.hook_outstanding || s.dispatch_seq != seq)
      SY_THROW(InvalidArgument, "low_latency_dispatch: the receive hook was already called");
    s.hook_outstanding = false;
    s.broken = true;  // until this hook completes
    detail::PhaseTimer timer("low-latency dispatch receive");
    DispatchArea own = dispatch_area(ly, s.base[me2], b);
    // Cross-node rows: fan out into the same output (claiming rows like a window sender).
    if (s.pending) {
      s.pending->wait();
      s.pending.reset();
    }
    for (int p = 0; p < ly.R; ++p) {
      if (s.base[p]) continue;
      const uint8_t* msg = s.recv[p].data();
      int64_t header[2];
      std::memcpy(header, msg, sizeof(header));
      if (header[1] != ly.H)
        SY_THROW(InvalidArgument, "low_latency_dispatch: hidden size differs between ranks: rank "
                                      << me2 << " has " << ly.H << ", rank " << p << " has " << header[1]);
      if (header[0] < 0 || header[0] > ly.Tmax)
        SY_THROW(InvalidArgument, "low_latency_dispatch: rank " << p << " sent " << header[0]
                                                                << " tokens, more than low_latency_max_tokens = "
                                                                << ly.Tmax);
      std::vector<uint32_t> n(ly.L, 0), at(ly.L, 0);
      for (int64_t i = 0; i < header[0]; ++i) {
        int32_t loc[kLowLatencyMaxTopK];
        std::memcpy(loc, msg + kHeaderBytes + i * msg_slot + staged + sizeof(int32_t), sizeof(loc));
        for (int k = 0; k < kLowLatencyMaxTopK && loc[k] >= 0; ++k) {
          if (loc[k] >= ly.L) SY_THROW(InternalError, "low_latency_dispatch: local expert " << loc[k] << " from rank " << p);
          ++n[loc[k]];
        }
      }
      for (int j = 0; j < ly.L; ++j)
        if (n[j]) at[j] = claim(own.count + j, n[j]);
      for (int64_t i = 0; i < header[0]; ++i) {
        const uint8_t* row = msg + kHeaderBytes + i * msg_slot;
        detail::RouteEntry en{};
        float w[kLowLatencyMaxTopK];
        int32_t loc[kLowLatencyMaxTopK];
        std::memcpy(&en.token, row + staged, sizeof(int32_t));
        std::memcpy(loc, row + staged + sizeof(int32_t), sizeof(loc));
        std::memcpy(w, row + staged + sizeof(int32_t) + sizeof(loc), sizeof(w));
        for (int k = 0; k < kLowLatencyMaxTopK && loc[k] >= 0; ++k) {
          const int j = loc[k];
          const int64_t r = static_cast<int64_t>(j) * ly.slots + at[j]++;
          std::memcpy(own.x + r * payload, row, payload);
          if (fp8) std::memcpy(own.scales + r * ly.S, row + ly.H, ly.S * sizeof(float));
          own.src_rank[r] = p;
          own.src_token[r] = en.token;
          en.row[en.n] = static_cast<int32_t>(r);
          en.weight[en.n] = w[k];
          ++en.n;
        }
        own.route[static_cast<int64_t>(p) * ly.Tmax + i] = en;
      }
      s.arrived[p] = header[0];
    }
    timer.lap("messages");
    // Window sources: wait for their flags (their rows are then complete).
    for (int p = 0; p < ly.R; ++p) {
      if (!s.base[p]) continue;
      detail::LlFlag* f = own.flag + p;
      if (p != me2)
        detail::wait_flag(f, seq, *s.window, p, me2, exchange_->timeout(), "low_latency_dispatch");
      if (f->hidden != ly.H || f->fp8 != (fp8 ? 1 : 0))
        SY_THROW(InvalidArgument, "low_latency_dispatch: ranks disagree: rank "
                                      << me2 << " has hidden " << ly.H << (fp8 ? " fp8" : " bf16") << ", rank " << p
                                      << " has hidden " << f->hidden << (f->fp8 ? " fp8" : " bf16"));
      if (f->tokens < 0 || f->tokens > ly.Tmax)
        SY_THROW(InternalError, "low_latency_dispatch: rank " << p << " announced " << f->tokens << " tokens");
      s.arrived[p] = f->tokens;
    }
    timer.lap("flag waits");
    for (int j = 0; j < ly.L; ++j) s.count[j] = static_cast<int32_t>(std::atomic_ref<uint32_t>(own.count[j]).load());
    s.broken = false;
    LowLatencyView v;
    v.dtype = fp8 ? comm::DataType::kFloat8E4M3 : comm::DataType::kBfloat16;
    v.slots_per_expert = ly.slots;
    v.x = own.x;
    v.scales = fp8 ? own.scales : nullptr;
    v.count = s.count.data();
    v.src_rank = own.src_rank;
    v.src_token = own.src_token;
    v.stats = s.stats;
    return v;
  };
}

LowLatencyCombineHook Buffer::low_latency_combine_send(const uint16_t* expert_out) {
  if (!ll_ || ll_->dispatch_seq == 0)
    SY_THROW(InvalidArgument, "low_latency_combine: no low-latency dispatch happened on this Buffer");
  LowLatencyState& st = *ll_;
  const detail::LlLayout& lay = st.layout;
  if (st.hook_outstanding) SY_THROW(InvalidArgument, "low_latency_combine: a receive hook is still outstanding");
  if (st.broken) SY_THROW(InvalidArgument, "low_latency_combine: an earlier low-latency call failed; make a new Buffer");
  PeerExchange& ex = *exchange_;
  const int R = lay.R, me = ex.rank();
  const int64_t H = lay.H;
  const size_t row = 2 * static_cast<size_t>(H);
  const uint32_t seq = ++st.combine_seq;
  const int cb = static_cast<int>(seq & 1u);
  st.stats = {};
  st.stats.row_bytes = static_cast<int64_t>(row);
  DispatchArea own = dispatch_area(lay, st.base[me], st.parity);
  float* acc = st.acc.data();  // one row
  // Weighted sum of this rank's experts per received token, in top-k order.
  for (int p = 0; p < R; ++p) {
    uint16_t* dst_window = st.base[p] ? combine_area(lay, st.base[p], cb).partial + static_cast<int64_t>(me) * lay.Tmax * H
                                      : nullptr;
    if (!st.base[p]) st.back_send[p].resize(st.arrived[p] * row);
    for (int64_t i = 0; i < st.arrived[p]; ++i) {
      const detail::RouteEntry& en = own.route[static_cast<int64_t>(p) * lay.Tmax + i];
      std::fill(acc, acc + H, 0.f);
      for (int n = 0; n < en.n; ++n)
        detail::accumulate_row(reinterpret_cast<const uint8_t*>(expert_out + static_cast<int64_t>(en.row[n]) * H),
                               comm::DataType::kBfloat16, H, en.weight[n], acc);
      uint8_t* out = dst_window ? reinterpret_cast<uint8_t*>(dst_window + static_cast<int64_t>(en.token) * H)
                                : st.back_send[p].data() + i * row;
      detail::store_row(acc, H, comm::DataType::kBfloat16, out);
    }
    st.stats.logical_bytes += static_cast<int64_t>(st.arrived[p] * row);
  }
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p = 0; p < R; ++p) {
    if (st.base[p]) {
      if (p != me) detail::post_flag(combine_area(lay, st.base[p], cb).flag + me, seq);
      continue;
    }
    st.back_recv[p].resize(st.sent[p].size() * row);
    if (!st.back_send[p].empty()) {
      sends.push_back({p, st.back_send[p].data(), st.back_send[p].size()});
      if (!ex.rank_map().same_node(me, p)) st.stats.wire_bytes += static_cast<int64_t>(st.back_send[p].size());
    }
    if (!st.back_recv[p].empty()) recvs.push_back({p, st.back_recv[p].data(), st.back_recv[p].size()});
  }
  st.pending = sends.empty() && recvs.empty() ? nullptr : ex.post(sends, recvs, kTagLowLatencyCombine);
  st.hook_outstanding = true;
  return [this, row, seq, cb] {
    LowLatencyState& s = *ll_;
    const detail::LlLayout& ly = s.layout;
    const int me2 = exchange_->rank();
    if (!s.hook_outstanding || s.combine_seq != seq)
      SY_THROW(InvalidArgument, "low_latency_combine: the receive hook was already called");
    s.hook_outstanding = false;
    s.broken = true;
    if (s.pending) {
      s.pending->wait();
      s.pending.reset();
    }
    CombineArea own = combine_area(ly, s.base[me2], cb);
    for (int p = 0; p < ly.R; ++p)
      if (s.base[p] && p != me2)
        detail::wait_flag(own.flag + p, seq, *s.window, p, me2, exchange_->timeout(), "low_latency_combine");
    float* y = s.acc.data() + ly.H;  // [T x H] after the one-row scratch
    std::fill(y, y + s.T * ly.H, 0.f);
    for (int p = 0; p < ly.R; ++p) {
      for (size_t i = 0; i < s.sent[p].size(); ++i) {
        const int64_t t = s.sent[p][i];
        const uint8_t* src = s.base[p] ? reinterpret_cast<const uint8_t*>(own.partial + (p * ly.Tmax + t) * ly.H)
                                       : s.back_recv[p].data() + i * row;
        detail::add_row(src, comm::DataType::kBfloat16, ly.H, y + t * ly.H);
      }
    }
    for (int64_t i = 0; i < s.T * ly.H; ++i) s.y[i] = bf16_from_float(y[i]);
    s.broken = false;
    return s.y.data();
  };
}

Buffer::~Buffer() = default;

void Buffer::init_low_latency() {
  const int R = num_ranks(), L = num_local_experts_, me = rank();
  const int64_t H = options_.hidden, Tmax = options_.low_latency_max_tokens;
  ll_ = std::make_unique<LowLatencyState>(R, L, H, fp8_num_tiles(H), Tmax);
  LowLatencyState& st = *ll_;
  const size_t bytes = st.layout.window_bytes();
  st.window = exchange_->open_window(bytes);
  if (!st.window) st.window = std::make_unique<PrivateWindow>(me, R, bytes);
  st.base.assign(R, nullptr);
  std::string shared;
  for (int p = 0; p < R; ++p) {
    st.base[p] = st.window->at(p);
    if (!st.base[p] || p == me) continue;
    if (!shared.empty()) shared.push_back(',');
    shared.append(std::to_string(p));
  }
  SY_DEBUG("dispatch", "low-latency: rank " << me << " writes ranks {" << shared << "} through shared memory, "
                                            << bytes << " bytes of window");
  if (!st.base[me]) SY_THROW(InternalError, "low_latency: rank " << me << ": the window has no local area");
  const size_t msg_slot = std::max(message_slot_bytes(H, st.layout.S, true), message_slot_bytes(H, st.layout.S, false));
  st.send.assign(R, {});
  st.recv.assign(R, {});
  for (int p = 0; p < R; ++p)
    if (!st.base[p]) {
      st.send[p].resize(kHeaderBytes + Tmax * msg_slot);
      st.recv[p].resize(kHeaderBytes + Tmax * msg_slot);
    }
  st.token.assign(2 * H + st.layout.S * sizeof(float), 0);
  st.count.assign(L, 0);
  st.sent.assign(R, {});
  st.arrived.assign(R, 0);
  st.back_send.assign(R, {});
  st.back_recv.assign(R, {});
  st.acc.assign((Tmax + 1) * H, 0.f);
  st.y.assign(Tmax * H, 0);
}

}  // namespace switchyard::dispatch
