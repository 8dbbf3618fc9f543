// Flat reference dispatch/combine (naive per-(token, expert) and rank-deduplicated), written
// as plain all_to_all_v exchanges over a PeerExchange; independent of buffer.cc.
//
// Message row (bytes): [H * elem payload][S * 4 scales, FP8][int32 src_token]
//   naive: [int32 expert][float weight]      dedup: [int32 topk_idx[K]][float weights[K]]
#include "switchyard/dispatch/reference.h"

#include <algorithm>
#include <cstring>

#include "payload.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch {

namespace {

constexpr int kTagCounts = 101, kTagRows = 102, kTagBack = 103;

// all_to_all_v of bytes: exchanges the byte counts, then the payloads. send[p] for p == me
// is moved to the result directly.
std::vector<std::vector<uint8_t>> all_to_all_v(PeerExchange& ex, std::vector<std::vector<uint8_t>>& send, int tag,
                                               TrafficStats& stats, bool count_exchange,
                                               const std::vector<int64_t>& known_recv_bytes) {
  const int R = ex.size(), me = ex.rank();
  std::vector<int64_t> out_counts(R), in_counts(R, 0);
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  if (count_exchange) {
    for (int p = 0; p < R; ++p) {
      out_counts[p] = static_cast<int64_t>(send[p].size());
      if (p == me) continue;
      sends.push_back({p, &out_counts[p], sizeof(int64_t)});
      recvs.push_back({p, &in_counts[p], sizeof(int64_t)});
      stats.control_bytes += sizeof(int64_t);
    }
    ex.exchange(sends, recvs, kTagCounts);
  } else {
    in_counts = known_recv_bytes;
  }
  std::vector<std::vector<uint8_t>> recv(R);
  sends.clear();
  recvs.clear();
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    recv[p].resize(in_counts[p]);
    if (in_counts[p] > 0) recvs.push_back({p, recv[p].data(), recv[p].size()});
    if (!send[p].empty()) {
      sends.push_back({p, send[p].data(), send[p].size()});
      if (!ex.rank_map().same_node(me, p)) stats.wire_bytes += static_cast<int64_t>(send[p].size());
    }
  }
  ex.exchange(sends, recvs, tag);
  recv[me] = std::move(send[me]);
  return recv;
}

int32_t rd_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
float rd_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

const char* reference_kind_name(ReferenceKind kind) { return kind == ReferenceKind::kNaive ? "naive" : "rank-dedup"; }

ReferenceDispatch reference_dispatch(ReferenceKind kind, PeerExchange& ex, int num_experts, int64_t hidden,
                                     const DispatchArgs& args) {
  const int R = ex.size(), me = ex.rank(), K = args.top_k, L = num_experts / R;
  const int64_t T = args.num_tokens, H = hidden;
  validate_topk_idx(args.topk_idx, T, K, num_experts);
  const bool fp8 = args.dtype == comm::DataType::kFloat8E4M3;
  const size_t payload = H * payload_elem_bytes(args.dtype);
  const size_t scales = fp8 ? fp8_num_tiles(H) * sizeof(float) : 0;
  const size_t meta = kind == ReferenceKind::kNaive ? 12 : 4 + 8 * static_cast<size_t>(K);
  const size_t row = payload + scales + meta;
  const uint8_t* x = static_cast<const uint8_t*>(args.x);
  ReferenceDispatch d;
  d.kind = kind;
  d.dtype = args.dtype;
  d.num_tokens = T;
  d.top_k = K;
  d.stats.row_bytes = static_cast<int64_t>(row);
  d.sent.assign(R, {});
  std::vector<std::vector<uint8_t>> send(R);
  auto put_token = [&](std::vector<uint8_t>& buf, int64_t t) {
    const size_t at = buf.size();
    buf.resize(at + row);
    std::memcpy(buf.data() + at, x + t * payload, payload);
    if (scales) std::memcpy(buf.data() + at + payload, args.x_scales + t * (scales / 4), scales);
    const int32_t tok = static_cast<int32_t>(t);
    std::memcpy(buf.data() + at + payload + scales, &tok, 4);
    return buf.data() + at + payload + scales + 4;
  };
  for (int64_t t = 0; t < T; ++t) {
    if (kind == ReferenceKind::kNaive) {
      for (int k = 0; k < K; ++k) {
        const int64_t e = args.topk_idx[t * K + k];
        if (e < 0) continue;
        const int p = static_cast<int>(e / L);
        uint8_t* m = put_token(send[p], t);
        const int32_t e32 = static_cast<int32_t>(e);
        const float w = args.topk_weights ? args.topk_weights[t * K + k] : 0.f;
        std::memcpy(m, &e32, 4);
        std::memcpy(m + 4, &w, 4);
        d.sent[p].push_back(static_cast<int32_t>(t * K + k));
      }
    } else {
      for (int p = 0; p < R; ++p) {
        bool hit = false;
        for (int k = 0; k < K; ++k) hit = hit || (args.topk_idx[t * K + k] >= 0 && args.topk_idx[t * K + k] / L == p);
        if (!hit) continue;
        uint8_t* m = put_token(send[p], t);
        for (int k = 0; k < K; ++k) {
          const int32_t e32 = static_cast<int32_t>(args.topk_idx[t * K + k]);
          const float w = args.topk_weights ? args.topk_weights[t * K + k] : 0.f;
          std::memcpy(m + 4 * k, &e32, 4);
          std::memcpy(m + 4 * (K + k), &w, 4);
        }
        d.sent[p].push_back(static_cast<int32_t>(t));
      }
    }
  }
  for (int p = 0; p < R; ++p) d.stats.logical_bytes += static_cast<int64_t>(send[p].size());
  std::vector<std::vector<uint8_t>> recv = all_to_all_v(ex, send, kTagRows, d.stats, true, {});
  // Bucket rows per local expert: arrival order is (source rank, token[, k]) ascending.
  d.arrived.assign(R, 0);
  std::vector<int64_t> count(L, 0);
  auto local_experts = [&](const uint8_t* m, std::vector<std::pair<int, float>>& out) {
    out.clear();
    if (kind == ReferenceKind::kNaive) {
      out.emplace_back(rd_i32(m) - me * L, rd_f32(m + 4));
    } else {
      for (int k = 0; k < K; ++k) {
        const int32_t e = rd_i32(m + 4 * k);
        if (e >= 0 && e / L == me) out.emplace_back(e - me * L, rd_f32(m + 4 * (K + k)));
      }
    }
  };
  std::vector<std::pair<int, float>> le;
  for (int p = 0; p < R; ++p) {
    d.arrived[p] = static_cast<int64_t>(recv[p].size() / row);
    for (int64_t i = 0; i < d.arrived[p]; ++i) {
      local_experts(recv[p].data() + i * row + payload + scales + 4, le);
      for (auto& [j, w] : le) ++count[j];
    }
  }
  d.expert_offsets.assign(L + 1, 0);
  for (int j = 0; j < L; ++j) d.expert_offsets[j + 1] = d.expert_offsets[j] + count[j];
  const int64_t P = d.expert_offsets[L];
  d.expert_x.resize(P * payload);
  if (fp8) d.expert_x_scales.resize(P * scales / 4);
  d.row_src_rank.resize(P);
  d.row_src_token.resize(P);
  d.row_weight.resize(P);
  std::vector<int64_t> cursor(d.expert_offsets.begin(), d.expert_offsets.end() - 1);
  for (int p = 0; p < R; ++p)
    for (int64_t i = 0; i < d.arrived[p]; ++i) {
      const uint8_t* r = recv[p].data() + i * row;
      local_experts(r + payload + scales + 4, le);
      std::vector<int64_t> rows;
      for (auto& [j, w] : le) {
        const int64_t at = cursor[j]++;
        std::memcpy(d.expert_x.data() + at * payload, r, payload);
        if (fp8) std::memcpy(d.expert_x_scales.data() + at * scales / 4, r + payload, scales);
        d.row_src_rank[at] = p;
        d.row_src_token[at] = rd_i32(r + payload + scales);
        d.row_weight[at] = w;
        rows.push_back(at);
      }
      d.arrival_rows.push_back(std::move(rows));
    }
  return d;
}

CombineResult reference_combine(PeerExchange& ex, const ReferenceDispatch& d, const void* expert_out,
                                comm::DataType dtype, int64_t hidden, const float* topk_weights) {
  detail::require_reduce_type(dtype, "reference_combine");
  const int R = ex.size(), K = d.top_k;
  const int64_t H = hidden;
  const size_t row = H * payload_elem_bytes(dtype);
  const uint8_t* out = static_cast<const uint8_t*>(expert_out);
  CombineResult res;
  res.dtype = dtype;
  res.stats.row_bytes = static_cast<int64_t>(row);
  // Back to the sources, in arrival order per peer.
  std::vector<std::vector<uint8_t>> back(R);
  std::vector<float> acc(H);
  size_t a = 0;
  for (int p = 0; p < R; ++p) {
    back[p].resize(d.arrived[p] * row);
    for (int64_t i = 0; i < d.arrived[p]; ++i, ++a) {
      uint8_t* dst = back[p].data() + i * row;
      if (d.kind == ReferenceKind::kNaive) {
        std::memcpy(dst, out + d.arrival_rows[a][0] * row, row);
      } else {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t r : d.arrival_rows[a]) detail::accumulate_row(out + r * row, dtype, H, d.row_weight[r], acc.data());
        detail::store_row(acc.data(), H, dtype, dst);
      }
    }
    res.stats.logical_bytes += static_cast<int64_t>(back[p].size());
  }
  std::vector<int64_t> expect(R);
  for (int p = 0; p < R; ++p) expect[p] = static_cast<int64_t>(d.sent[p].size() * row);
  std::vector<std::vector<uint8_t>> got = all_to_all_v(ex, back, kTagBack, res.stats, false, expect);
  std::vector<float> y(d.num_tokens * H, 0.f);
  if (d.kind == ReferenceKind::kNaive) {
    // Gather each (t, k) output, then sum over k ascending with the source's weights.
    std::vector<const uint8_t*> slot(d.num_tokens * K, nullptr);
    for (int p = 0; p < R; ++p)
      for (size_t i = 0; i < d.sent[p].size(); ++i) slot[d.sent[p][i]] = got[p].data() + i * row;
    for (int64_t t = 0; t < d.num_tokens; ++t)
      for (int k = 0; k < K; ++k)
        if (slot[t * K + k])
          detail::accumulate_row(slot[t * K + k], dtype, H, topk_weights ? topk_weights[t * K + k] : 1.f, y.data() + t * H);
  } else {
    for (int p = 0; p < R; ++p)
      for (size_t i = 0; i < d.sent[p].size(); ++i)
        detail::add_row(got[p].data() + i * row, dtype, H, y.data() + static_cast<int64_t>(d.sent[p][i]) * H);
  }
  res.y.resize(d.num_tokens * row);
  for (int64_t t = 0; t < d.num_tokens; ++t) detail::store_row(y.data() + t * H, H, dtype, res.y.data() + t * row);
  return res;
}

}  // namespace switchyard::dispatch
