// Low-latency mode (decode): fixed slots, counts in the message header, FP8 cast inside
// dispatch, BF16 combine with the gate weights applied on the expert side; send and
// receive split by a hook. Layout of a message in buffer.h (kLowLatencyMaxTopK).
//
// Tokens are deduplicated per destination rank (one slot per (token, rank), listing its
// local experts) and fanned out to the per-expert output [L x R*Tmax x H] on receipt.
// DeepEP's LL kernels send one message per (token, expert) instead; with RDMA puts there is
// no per-message cost to amortize, here there is.
#include <algorithm>
#include <cstring>

#include "low_latency_state.h"
#include "payload.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch {

namespace {
constexpr int kTagLowLatencyDispatch = 20, kTagLowLatencyCombine = 21;
constexpr size_t kHeaderBytes = 2 * sizeof(int64_t);
}  // namespace


namespace {

size_t slot_bytes(int64_t H, int64_t S, bool fp8) {
  return (fp8 ? static_cast<size_t>(H) + S * sizeof(float) : 2 * static_cast<size_t>(H)) + sizeof(int32_t) +
         kLowLatencyMaxTopK * (sizeof(int32_t) + sizeof(float));
}

}  // namespace

LowLatencyRecvHook Buffer::low_latency_dispatch_send(const LowLatencyDispatchArgs& args) {
  if (options_.low_latency_max_tokens <= 0)
    SY_THROW(InvalidArgument, "low_latency_dispatch: the Buffer was made with low_latency_max_tokens = 0");
  LowLatencyState& st = *ll_;
  PeerExchange& ex = *exchange_;
  const int R = st.R, me = ex.rank(), L = st.L, K = args.top_k;
  const int64_t T = args.num_tokens, H = st.H, S = st.S;
  if (T < 0 || T > st.Tmax)
    SY_THROW(InvalidArgument, "low_latency_dispatch: num_tokens = " << T << " is outside [0, low_latency_max_tokens = "
                                                                    << st.Tmax << "]");
  if (K < 1 || K > kLowLatencyMaxTopK)
    SY_THROW(InvalidArgument, "low_latency_dispatch: top_k = " << K << " must be in [1, " << kLowLatencyMaxTopK << "]");
  if (T > 0 && args.x == nullptr) SY_THROW(InvalidArgument, "low_latency_dispatch: x is null");
  validate_topk_idx(args.topk_idx, T, K, options_.num_experts);
  if (st.pending) SY_THROW(InvalidArgument, "low_latency_dispatch: the previous receive hook was not called");
  st.T = T;
  st.K = K;
  st.fp8 = args.use_fp8;
  st.stats = {};
  const bool fp8 = args.use_fp8;
  const size_t payload = fp8 ? H : 2 * H, scale_bytes = fp8 ? S * sizeof(float) : 0;
  const size_t slot = slot_bytes(H, S, fp8);
  st.stats.row_bytes = static_cast<int64_t>(slot);
  // Cast every token once (FP8 inside dispatch), then copy it into each destination's slots.
  const size_t staged = payload + scale_bytes;
  for (int64_t t = 0; t < T; ++t) {
    uint8_t* dst = st.staging.data() + t * staged;
    if (fp8) {
      quantize_fp8_tiles(args.x + t * H, 1, H, args.pow2_scales, dst, reinterpret_cast<float*>(dst + H));
    } else {
      std::memcpy(dst, args.x + t * H, payload);
    }
  }
  std::vector<int64_t> rows(R, 0);
  for (auto& v : st.sent) v.clear();
  for (int64_t t = 0; t < T; ++t) {
    for (int p = 0; p < R; ++p) {
      int32_t local[kLowLatencyMaxTopK];
      float w[kLowLatencyMaxTopK];
      int n = 0;
      for (int k = 0; k < K; ++k) {
        const int64_t e = args.topk_idx[t * K + k];
        if (e >= 0 && e / L == p) {
          local[n] = static_cast<int32_t>(e - static_cast<int64_t>(p) * L);
          w[n] = args.topk_weights ? args.topk_weights[t * K + k] : 1.0f;
          ++n;
        }
      }
      if (n == 0) continue;
      for (int i = n; i < kLowLatencyMaxTopK; ++i) {
        local[i] = -1;
        w[i] = 0.f;
      }
      uint8_t* s = st.send[p].data() + kHeaderBytes + rows[p] * slot;
      std::memcpy(s, st.staging.data() + t * staged, staged);
      const int32_t tok = static_cast<int32_t>(t);
      std::memcpy(s + staged, &tok, sizeof(tok));
      std::memcpy(s + staged + sizeof(int32_t), local, sizeof(local));
      std::memcpy(s + staged + sizeof(int32_t) + sizeof(local), w, sizeof(w));
      ++rows[p];
      st.sent[p].push_back(tok);
      st.stats.logical_bytes += static_cast<int64_t>(slot);
    }
  }
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p = 0; p < R; ++p) {
    const int64_t header[2] = {rows[p], H};
    std::memcpy(st.send[p].data(), header, sizeof(header));
    if (p == me) continue;
    const size_t bytes = kHeaderBytes + rows[p] * slot;
    sends.push_back({p, st.send[p].data(), bytes});
    recvs.push_back({p, st.recv[p].data(), kHeaderBytes + st.Tmax * slot});
    st.stats.control_bytes += kHeaderBytes;
    if (!ex.rank_map().same_node(me, p)) st.stats.wire_bytes += static_cast<int64_t>(rows[p] * slot);
  }
  st.pending = ex.post(sends, recvs, kTagLowLatencyDispatch);
  return [this, slot, staged, fp8] {
    LowLatencyState& s = *ll_;
    const int me2 = exchange_->rank();
    if (!s.pending) SY_THROW(InvalidArgument, "low_latency_dispatch: the receive hook was already called");
    s.pending->wait();
    s.pending.reset();
    std::fill(s.count.begin(), s.count.end(), 0);
    const size_t out_row = fp8 ? s.H : 2 * s.H;
    for (int p = 0; p < s.R; ++p) {
      const uint8_t* msg = p == me2 ? s.send[p].data() : s.recv[p].data();
      int64_t header[2];
      std::memcpy(header, msg, sizeof(header));
      if (header[1] != s.H)
        SY_THROW(InvalidArgument, "low_latency_dispatch: hidden size differs between ranks: rank "
                                      << me2 << " has " << s.H << ", rank " << p << " has " << header[1]);
      if (header[0] < 0 || header[0] > s.Tmax)
        SY_THROW(InvalidArgument, "low_latency_dispatch: rank " << p << " sent " << header[0]
                                                                << " tokens, more than low_latency_max_tokens = "
                                                                << s.Tmax);
      s.arrived[p] = header[0];
      s.arrival_slots[p].assign(header[0] * kLowLatencyMaxTopK, -1);
      for (int64_t i = 0; i < header[0]; ++i) {
        const uint8_t* row = msg + kHeaderBytes + i * slot;
        int32_t tok, local[kLowLatencyMaxTopK];
        float w[kLowLatencyMaxTopK];
        std::memcpy(&tok, row + staged, sizeof(tok));
        std::memcpy(local, row + staged + sizeof(int32_t), sizeof(local));
        std::memcpy(w, row + staged + sizeof(int32_t) + sizeof(local), sizeof(w));
        for (int n = 0; n < kLowLatencyMaxTopK && local[n] >= 0; ++n) {
          const int j = local[n];
          if (j >= s.L) SY_THROW(InternalError, "low_latency_dispatch: local expert " << j << " from rank " << p);
          const int64_t at = static_cast<int64_t>(j) * s.slots + s.count[j]++;
          std::memcpy(s.out_x.data() + at * out_row, row, out_row);
          if (fp8) std::memcpy(s.out_scales.data() + at * s.S, row + s.H, s.S * sizeof(float));
          s.src_rank[at] = p;
          s.src_token[at] = tok;
          s.weight[at] = w[n];
          s.arrival_slots[p][i * kLowLatencyMaxTopK + n] = at;
        }
      }
    }
    LowLatencyView v;
    v.dtype = fp8 ? comm::DataType::kFloat8E4M3 : comm::DataType::kBfloat16;
    v.slots_per_expert = s.slots;
    v.x = s.out_x.data();
    v.scales = fp8 ? s.out_scales.data() : nullptr;
    v.count = s.count.data();
    v.src_rank = s.src_rank.data();
    v.src_token = s.src_token.data();
    v.stats = s.stats;
    return v;
  };
}

LowLatencyCombineHook Buffer::low_latency_combine_send(const uint16_t* expert_out) {
  if (!ll_) SY_THROW(InvalidArgument, "low_latency_combine: no low-latency dispatch happened on this Buffer");
  LowLatencyState& st = *ll_;
  if (st.pending) SY_THROW(InvalidArgument, "low_latency_combine: a receive hook is still outstanding");
  PeerExchange& ex = *exchange_;
  const int R = st.R, me = ex.rank();
  const int64_t H = st.H;
  const size_t row = 2 * static_cast<size_t>(H);
  std::vector<float> acc(H);
  st.stats = {};
  st.stats.row_bytes = static_cast<int64_t>(row);
  // Weighted sum of this rank's experts per received token, in the order it arrived.
  for (int p = 0; p < R; ++p) {
    st.back_send[p].resize(st.arrived[p] * row);
    for (int64_t i = 0; i < st.arrived[p]; ++i) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int n = 0; n < kLowLatencyMaxTopK; ++n) {
        const int64_t at = st.arrival_slots[p][i * kLowLatencyMaxTopK + n];
        if (at < 0) break;
        detail::accumulate_row(reinterpret_cast<const uint8_t*>(expert_out + at * H), comm::DataType::kBfloat16, H,
                               st.weight[at], acc.data());
      }
      detail::store_row(acc.data(), H, comm::DataType::kBfloat16, st.back_send[p].data() + i * row);
    }
    st.stats.logical_bytes += static_cast<int64_t>(st.back_send[p].size());
  }
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    st.back_recv[p].resize(st.sent[p].size() * row);
    if (!st.back_send[p].empty()) {
      sends.push_back({p, st.back_send[p].data(), st.back_send[p].size()});
      if (!ex.rank_map().same_node(me, p)) st.stats.wire_bytes += static_cast<int64_t>(st.back_send[p].size());
    }
    if (!st.back_recv[p].empty()) recvs.push_back({p, st.back_recv[p].data(), st.back_recv[p].size()});
  }
  st.pending = ex.post(sends, recvs, kTagLowLatencyCombine);
  return [this, row] {
    LowLatencyState& s = *ll_;
    const int me2 = exchange_->rank();
    if (!s.pending) SY_THROW(InvalidArgument, "low_latency_combine: the receive hook was already called");
    s.pending->wait();
    s.pending.reset();
    std::vector<float> y(s.T * s.H, 0.f);
    for (int p = 0; p < s.R; ++p) {
      const uint8_t* rows = p == me2 ? s.back_send[p].data() : s.back_recv[p].data();
      for (size_t i = 0; i < s.sent[p].size(); ++i)
        detail::add_row(rows + i * row, comm::DataType::kBfloat16, s.H, y.data() + s.sent[p][i] * s.H);
    }
    for (int64_t i = 0; i < s.T * s.H; ++i) s.y[i] = bf16_from_float(y[i]);
    return s.y.data();
  };
}

Buffer::~Buffer() = default;

void Buffer::init_low_latency() {
  const int R = num_ranks(), L = num_local_experts_;
  const int64_t H = options_.hidden, Tmax = options_.low_latency_max_tokens;
  ll_ = std::make_unique<LowLatencyState>();
  LowLatencyState* st = ll_.get();
  st->R = R;
  st->L = L;
  st->H = H;
  st->S = fp8_num_tiles(H);
  st->Tmax = Tmax;
  st->slots = R * Tmax;
  st->max_slot_bytes = std::max(slot_bytes(H, st->S, true), slot_bytes(H, st->S, false));
  st->send.assign(R, std::vector<uint8_t>(kHeaderBytes + Tmax * st->max_slot_bytes));
  st->recv.assign(R, std::vector<uint8_t>(kHeaderBytes + Tmax * st->max_slot_bytes));
  st->out_x.assign(static_cast<size_t>(L) * st->slots * 2 * H, 0);
  st->out_scales.assign(static_cast<size_t>(L) * st->slots * st->S, 0.f);
  st->count.assign(L, 0);
  st->src_rank.assign(static_cast<size_t>(L) * st->slots, -1);
  st->src_token.assign(static_cast<size_t>(L) * st->slots, -1);
  st->weight.assign(static_cast<size_t>(L) * st->slots, 0.f);
  st->staging.assign(Tmax * (2 * H + st->S * sizeof(float)), 0);
  st->sent.assign(R, {});
  st->arrived.assign(R, 0);
  st->arrival_slots.assign(R, {});
  st->back_send.assign(R, {});
  st->back_recv.assign(R, {});
  st->y.assign(Tmax * H, 0);
}

}  // namespace switchyard::dispatch
