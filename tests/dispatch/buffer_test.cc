// BufferTest: dispatch and combine on 1..8 ranks run as threads (ThreadExchange), flat and
// two-hop, checked against expectations computed here from every rank's inputs with plain
// loops: which tokens each rank must receive, in which order, with which payload, and what
// combine must return.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <tuple>
#include <random>
#include <set>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/dispatch/reference.h"
#include "thread_exchange.h"

namespace switchyard::dispatch {
namespace {

using testing::spawn_ranks;
using comm::DataType;

enum class Routing { kRandom, kSkewed, kMasked, kEmptyOdd };

// The inputs of one rank, a pure function of (rank, shape, routing).
struct RankInput {
  int64_t T = 0;
  std::vector<float> x;          // [T x H]
  std::vector<int64_t> topk;     // [T x K]
  std::vector<float> weights;    // [T x K]
};

RankInput make_input(int rank, int64_t T, int K, int E, int64_t H, Routing routing) {
  RankInput in;
  in.T = (routing == Routing::kEmptyOdd && rank % 2 == 1) ? 0 : T;
  std::mt19937 rng(1000 + rank);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  in.x.resize(in.T * H);
  for (auto& v : in.x) v = u(rng);
  in.topk.resize(in.T * K);
  in.weights.resize(in.T * K);
  for (int64_t t = 0; t < in.T; ++t) {
    std::vector<int> perm(E);
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int k = 0; k < K; ++k) {
      int64_t e = perm[k];
      if (routing == Routing::kSkewed) e = k == 0 ? 0 : -1;  // every token to expert 0 only
      if (routing == Routing::kMasked && (t + k) % 3 == 0) e = -1;
      in.topk[t * K + k] = e;
      in.weights[t * K + k] = 0.25f + 0.5f * (u(rng) + 1.f);
    }
  }
  return in;
}

struct Shape {
  int ranks, nodes;
  int64_t T;
  int K, E;
  int64_t H;
};

// Canonical received list of rank r: (src, token) pairs with an expert on r, src then token.
std::vector<std::pair<int, int64_t>> expected_recv(const std::vector<RankInput>& all, int r, int K, int L) {
  std::vector<std::pair<int, int64_t>> out;
  for (int s = 0; s < static_cast<int>(all.size()); ++s)
    for (int64_t t = 0; t < all[s].T; ++t) {
      bool hit = false;
      for (int k = 0; k < K; ++k) hit = hit || (all[s].topk[t * K + k] >= 0 && all[s].topk[t * K + k] / L == r);
      if (hit) out.emplace_back(s, t);
    }
  return out;
}

std::vector<RankInput> all_inputs(const Shape& s, Routing routing) {
  std::vector<RankInput> all;
  for (int r = 0; r < s.ranks; ++r) all.push_back(make_input(r, s.T, s.K, s.E, s.H, routing));
  return all;
}

// Expert e's output for a row: x * (1 + e / 16) (an "expert" that is easy to predict).
float expert_gain(int64_t global_expert) { return 1.0f + static_cast<float>(global_expert) / 16.0f; }

void check_dispatch_and_combine(const Shape& s, Routing routing, bool two_hop, int64_t alignment) {
  const auto all = all_inputs(s, routing);
  const auto map = topology::RankMap::contiguous(s.ranks, s.nodes);
  const int L = s.E / s.ranks;
  spawn_ranks(map, [&](std::shared_ptr<PeerExchange> ex) {
    const int r = ex->rank();
    Buffer buf(ex, {s.E, s.H, s.T, two_hop});
    EXPECT_EQ(buf.uses_two_hop(), two_hop && s.nodes > 1);
    const RankInput& in = all[r];
    DispatchArgs a;
    a.x = in.x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = in.topk.data();
    a.topk_weights = in.weights.data();
    a.num_tokens = in.T;
    a.top_k = s.K;
    a.expert_alignment = alignment;
    DispatchResult d = buf.dispatch(a);
    const auto want = expected_recv(all, r, s.K, L);
    ASSERT_EQ(d.num_recv_tokens, static_cast<int64_t>(want.size())) << "rank " << r;
    std::vector<int64_t> per_expert(L, 0);
    for (size_t i = 0; i < want.size(); ++i) {
      const auto [src, t] = want[i];
      EXPECT_EQ(d.recv_src_rank[i], src);
      EXPECT_EQ(d.recv_src_token[i], t);
      EXPECT_EQ(0, std::memcmp(d.recv_x.data() + i * s.H * 4, all[src].x.data() + t * s.H, s.H * 4));
      for (int k = 0; k < s.K; ++k) {
        const int64_t e = all[src].topk[t * s.K + k];
        const int64_t local = (e >= 0 && e / L == r) ? e - int64_t(r) * L : -1;
        EXPECT_EQ(d.recv_topk_idx[i * s.K + k], local);
        EXPECT_EQ(d.recv_topk_weights[i * s.K + k], all[src].weights[t * s.K + k]);
        if (local >= 0) ++per_expert[local];
      }
    }
    EXPECT_EQ(d.num_recv_tokens_per_expert, per_expert);
    // Expert-major layout: groups in expert order, aligned, rows in received order.
    ASSERT_EQ(d.expert_offsets.size(), size_t(L + 1));
    for (int j = 0; j < L; ++j) {
      EXPECT_EQ(d.expert_offsets[j] % alignment, 0);
      EXPECT_EQ(d.expert_offsets[j + 1] - d.expert_offsets[j], (per_expert[j] + alignment - 1) / alignment * alignment);
      int64_t prev = -1, n = 0;
      for (int64_t row = d.expert_offsets[j]; row < d.expert_offsets[j + 1]; ++row) {
        const int32_t i = d.expert_row_token[row];
        if (i < 0) continue;
        ++n;
        EXPECT_GT(i, prev);
        prev = i;
        EXPECT_EQ(d.recv_topk_idx[i * s.K + d.expert_row_slot[row]], j);
        EXPECT_EQ(0, std::memcmp(d.expert_x.data() + row * s.H * 4, d.recv_x.data() + i * s.H * 4, s.H * 4));
      }
      EXPECT_EQ(n, per_expert[j]);
    }
    // Experts scale by expert_gain; combine with the received weights.
    const int64_t P = d.handle.num_expert_rows();
    std::vector<float> out(P * s.H, 0.f);
    for (int64_t row = 0; row < P; ++row) {
      const int32_t i = d.expert_row_token[row];
      if (i < 0) continue;
      const int64_t e = d.recv_topk_idx[i * s.K + d.expert_row_slot[row]] + int64_t(r) * L;
      for (int64_t h = 0; h < s.H; ++h)
        out[row * s.H + h] = reinterpret_cast<const float*>(d.expert_x.data())[row * s.H + h] * expert_gain(e);
    }
    CombineArgs c;
    c.expert_out = out.data();
    c.dtype = DataType::kFloat32;
    c.handle = &d.handle;
    c.weights = d.recv_topk_weights.data();
    CombineResult y = buf.combine(c);
    ASSERT_EQ(y.y.size(), size_t(in.T * s.H * 4));
    const float* yv = reinterpret_cast<const float*>(y.y.data());
    for (int64_t t = 0; t < in.T; ++t)
      for (int64_t h = 0; h < s.H; ++h) {
        double want_y = 0;
        for (int k = 0; k < s.K; ++k) {
          const int64_t e = in.topk[t * s.K + k];
          if (e >= 0) want_y += double(in.weights[t * s.K + k]) * expert_gain(e) * in.x[t * s.H + h];
        }
        ASSERT_NEAR(yv[t * s.H + h], want_y, 1e-5 * (1 + std::fabs(want_y))) << "rank " << r << " t " << t;
      }
    // Bitwise reproducible: the same combine again gives the same bytes.
    EXPECT_EQ(buf.combine(c).y, y.y);
  });
}

TEST(BufferTest, DispatchCombineOneRank) { check_dispatch_and_combine({1, 1, 20, 2, 4, 16}, Routing::kRandom, true, 1); }

TEST(BufferTest, DispatchCombineRandomRanksAndNodes) {
  for (Shape s : {Shape{2, 1, 30, 3, 8, 24}, Shape{3, 1, 25, 2, 6, 8}, Shape{4, 1, 30, 4, 16, 20},
                  Shape{2, 2, 30, 3, 8, 24}, Shape{4, 2, 40, 4, 16, 20}})
    for (bool two_hop : {false, true}) {
      SCOPED_TRACE(::testing::Message() << s.ranks << " ranks " << s.nodes << " nodes two_hop " << two_hop);
      check_dispatch_and_combine(s, Routing::kRandom, two_hop, two_hop ? 4 : 1);
    }
}

TEST(BufferTest, SkewedMaskedAndEmptyRanks) {
  for (Routing routing : {Routing::kSkewed, Routing::kMasked, Routing::kEmptyOdd}) {
    check_dispatch_and_combine({4, 2, 25, 3, 8, 12}, routing, true, 3);
    check_dispatch_and_combine({3, 1, 25, 3, 6, 12}, routing, false, 1);
  }
}

TEST(BufferTest, ZeroTokensAndTopOne) {
  check_dispatch_and_combine({4, 2, 0, 2, 8, 16}, Routing::kRandom, true, 1);
  check_dispatch_and_combine({2, 1, 0, 2, 8, 16}, Routing::kRandom, false, 1);
  check_dispatch_and_combine({4, 2, 30, 1, 8, 16}, Routing::kRandom, true, 2);
  check_dispatch_and_combine({2, 1, 30, 1, 4, 16}, Routing::kRandom, false, 1);
}


// Sum over ranks of a per-rank value computed inside spawn_ranks.
struct PerRank {
  explicit PerRank(int n) : v(n, 0.0) {}
  std::vector<double> v;
  double sum() const {
    double s = 0;
    for (double x : v) s += x;
    return s;
  }
};

TEST(BufferTest, WireBytesEqualPredictionOnFourNodes) {
  const Shape s{8, 4, 40, 6, 32, 24};
  const auto all = all_inputs(s, Routing::kMasked);
  const auto map = topology::RankMap::contiguous(s.ranks, s.nodes);
  const int L = s.E / s.ranks;
  PerRank wire2(s.ranks), wire_flat(s.ranks), wire_combine(s.ranks), predicted(s.ranks), predicted_combine(s.ranks);
  for (bool two_hop : {true, false}) {
    for (DataType dt : {DataType::kFloat32, DataType::kFloat8E4M3}) {
      spawn_ranks(map, [&](std::shared_ptr<PeerExchange> ex) {
        const int r = ex->rank();
        Buffer buf(ex, {s.E, s.H, s.T, two_hop});
        const RankInput& in = all[r];
        std::vector<uint8_t> q(in.T * s.H);
        std::vector<float> scales(in.T * fp8_num_tiles(s.H));
        quantize_fp8_tiles(in.x.data(), in.T, s.H, false, q.data(), scales.data());
        DispatchArgs a;
        a.x = dt == DataType::kFloat32 ? static_cast<const void*>(in.x.data()) : q.data();
        a.dtype = dt;
        a.x_scales = scales.data();
        a.topk_idx = in.topk.data();
        a.topk_weights = in.weights.data();
        a.num_tokens = in.T;
        a.top_k = s.K;
        DispatchResult d = buf.dispatch(a);
        const int64_t row = (dt == DataType::kFloat32 ? 4 * s.H : s.H + 4 * fp8_num_tiles(s.H)) + 8 + 8 * s.K;
        ASSERT_EQ(d.stats.row_bytes, row);
        // Prediction from the routing alone: other nodes (two-hop) or other-node ranks (flat).
        double want = 0, want_combine = 0;
        for (int64_t t = 0; t < in.T; ++t) {
          std::set<int> nodes, ranks;
          for (int k = 0; k < s.K; ++k)
            if (in.topk[t * s.K + k] >= 0) {
              const int dst = static_cast<int>(in.topk[t * s.K + k] / L);
              if (!map.same_node(dst, r)) {
                nodes.insert(map.node_of(dst));
                ranks.insert(dst);
              }
            }
          want += double(two_hop ? nodes.size() : ranks.size()) * row;
          want_combine += double(two_hop ? nodes.size() : ranks.size()) * 4 * s.H;
        }
        EXPECT_EQ(double(d.stats.wire_bytes), want) << "rank " << r;
        (two_hop ? wire2 : wire_flat).v[r] = double(d.stats.wire_bytes);
        if (dt == DataType::kFloat32) {
          // Combine: the same hops backwards; what crosses the network is one partial sum per
          // (token, node) in two-hop mode. Compare globally (it is sent by the forwarders).
          std::vector<float> out(d.handle.num_expert_rows() * s.H, 1.f);
          CombineArgs c;
          c.expert_out = out.data();
          c.dtype = DataType::kFloat32;
          c.handle = &d.handle;
          CombineResult y = buf.combine(c);
          wire_combine.v[r] = double(y.stats.wire_bytes);
          predicted_combine.v[r] = want_combine;
        }
      });
      EXPECT_EQ(wire_combine.sum(), predicted_combine.sum()) << "two_hop " << two_hop;
    }
  }
  // The saving the two-hop path exists for.
  EXPECT_LT(wire2.sum(), wire_flat.sum());
}

TEST(BufferTest, TwoHopAgreesWithFlatAndPayloadsArriveBitExact) {
  const Shape s{4, 2, 30, 4, 16, 256};
  const auto all = all_inputs(s, Routing::kRandom);
  const auto map = topology::RankMap::contiguous(s.ranks, s.nodes);
  std::vector<std::vector<uint8_t>> y_flat(s.ranks), y_two(s.ranks);
  for (bool two_hop : {false, true}) {
    spawn_ranks(map, [&](std::shared_ptr<PeerExchange> ex) {
      const int r = ex->rank();
      Buffer buf(ex, {s.E, s.H, s.T, two_hop});
      const RankInput& in = all[r];
      std::vector<uint16_t> xb(in.T * s.H);
      bf16_from_float(in.x.data(), in.T * s.H, xb.data());
      std::vector<uint8_t> q(in.T * s.H);
      std::vector<float> scales(in.T * fp8_num_tiles(s.H));
      quantize_fp8_tiles(in.x.data(), in.T, s.H, true, q.data(), scales.data());
      DispatchArgs a;
      a.topk_idx = in.topk.data();
      a.topk_weights = in.weights.data();
      a.num_tokens = in.T;
      a.top_k = s.K;
      // BF16 and FP8 payloads arrive bit for bit.
      a.x = xb.data();
      a.dtype = DataType::kBfloat16;
      DispatchResult db = buf.dispatch(a);
      a.x = q.data();
      a.dtype = DataType::kFloat8E4M3;
      a.x_scales = scales.data();
      DispatchResult d8 = buf.dispatch(a);
      const int64_t S = fp8_num_tiles(s.H);
      for (int64_t i = 0; i < db.num_recv_tokens; ++i) {
        const int src = db.recv_src_rank[i];
        const int64_t t = db.recv_src_token[i];
        std::vector<uint16_t> src_b(s.H);
        bf16_from_float(all[src].x.data() + t * s.H, s.H, src_b.data());
        EXPECT_EQ(0, std::memcmp(db.recv_x.data() + i * s.H * 2, src_b.data(), s.H * 2));
        std::vector<uint8_t> src_q(s.H);
        std::vector<float> src_s(S);
        quantize_fp8_tiles(all[src].x.data() + t * s.H, 1, s.H, true, src_q.data(), src_s.data());
        EXPECT_EQ(0, std::memcmp(d8.recv_x.data() + i * s.H, src_q.data(), s.H));
        EXPECT_EQ(0, std::memcmp(d8.recv_x_scales.data() + i * S, src_s.data(), S * 4));
      }
      // Combine in BF16 with random expert outputs; keep y for the flat/two-hop comparison.
      std::mt19937 rng(77 + r);
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      std::vector<uint16_t> out(db.handle.num_expert_rows() * s.H);
      for (auto& v : out) v = bf16_from_float(u(rng));
      std::vector<float> out32(out.size());
      bf16_to_float(out.data(), out.size(), out32.data());
      CombineArgs c;
      c.handle = &db.handle;
      c.weights = db.recv_topk_weights.data();
      c.expert_out = out32.data();
      c.dtype = DataType::kFloat32;
      (two_hop ? y_two : y_flat)[r] = buf.combine(c).y;
      c.expert_out = out.data();
      c.dtype = DataType::kBfloat16;
      CombineResult yb = buf.combine(c);
      const float* y32 = reinterpret_cast<const float*>((two_hop ? y_two : y_flat)[r].data());
      const uint16_t* y16 = reinterpret_cast<const uint16_t*>(yb.y.data());
      for (int64_t i = 0; i < in.T * s.H; ++i)
        ASSERT_NEAR(bf16_to_float(y16[i]), y32[i], 0.02 * (1 + std::fabs(y32[i])));
    });
  }
  // Flat and two-hop sum in different orders: equal within FP32 rounding.
  for (int r = 0; r < s.ranks; ++r) {
    ASSERT_EQ(y_flat[r].size(), y_two[r].size());
    const float* a = reinterpret_cast<const float*>(y_flat[r].data());
    const float* b = reinterpret_cast<const float*>(y_two[r].data());
    for (size_t i = 0; i < y_flat[r].size() / 4; ++i) ASSERT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(a[i])));
  }
}

TEST(BufferTest, CachedAndAsyncDispatchMatchTheFirst) {
  const Shape s{4, 2, 20, 3, 8, 16};
  const auto all = all_inputs(s, Routing::kMasked);
  spawn_ranks(topology::RankMap::contiguous(s.ranks, s.nodes), [&](std::shared_ptr<PeerExchange> ex) {
    const int r = ex->rank();
    Buffer buf(ex, {s.E, s.H, s.T, true});
    const RankInput& in = all[r];
    DispatchArgs a;
    a.x = in.x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = in.topk.data();
    a.topk_weights = in.weights.data();
    a.num_tokens = in.T;
    a.top_k = s.K;
    Pending<DispatchResult> pending = buf.dispatch_async(a);
    DispatchResult d = pending.wait();
    std::vector<float> x2(in.x.size());
    for (size_t i = 0; i < x2.size(); ++i) x2[i] = 2 * in.x[i] + 1;
    DispatchArgs cached;
    cached.x = x2.data();
    cached.dtype = DataType::kFloat32;
    cached.num_tokens = in.T;
    cached.cached_handle = &d.handle;
    DispatchResult d2 = buf.dispatch(cached);
    ASSERT_EQ(d2.num_recv_tokens, d.num_recv_tokens);
    EXPECT_EQ(d2.recv_topk_idx, d.recv_topk_idx);
    EXPECT_EQ(d2.expert_offsets, d.expert_offsets);
    EXPECT_LT(d2.stats.row_bytes, d.stats.row_bytes);  // no metadata on a cached dispatch
    for (int64_t i = 0; i < d.num_recv_tokens; ++i)
      for (int64_t h = 0; h < s.H; ++h)
        EXPECT_EQ(reinterpret_cast<const float*>(d2.recv_x.data())[i * s.H + h],
                  2 * reinterpret_cast<const float*>(d.recv_x.data())[i * s.H + h] + 1);
    CombineArgs c;
    c.expert_out = d.expert_x.data();
    c.dtype = DataType::kFloat32;
    c.handle = &d.handle;
    Pending<CombineResult> pc = buf.combine_async(c);
    CombineResult y_async = pc.wait();
    EXPECT_EQ(y_async.y, buf.combine(c).y);
    // Identity experts, unit weights: y = (number of unmasked experts) * x.
    const float* y = reinterpret_cast<const float*>(y_async.y.data());
    for (int64_t t = 0; t < in.T; ++t) {
      int n = 0;
      for (int k = 0; k < s.K; ++k) n += in.topk[t * s.K + k] >= 0;
      for (int64_t h = 0; h < s.H; ++h) ASSERT_FLOAT_EQ(y[t * s.H + h], n * in.x[t * s.H + h]);
    }
  });
}

// Loss = sum_t <g_t, combine(expert(dispatch(x)), w)_t> over all ranks, experts scale by
// expert_gain. Returns the loss and, when grads != nullptr, the analytic gradients
// (dx [T x H], dw [T x K] per rank) from combine_backward + dispatch_backward.
double moe_loss(const Shape& s, bool two_hop, const std::vector<RankInput>& all,
                std::vector<std::pair<std::vector<float>, std::vector<float>>>* grads) {
  PerRank loss(s.ranks);
  const int L = s.E / s.ranks;
  if (grads) grads->assign(s.ranks, {});
  spawn_ranks(topology::RankMap::contiguous(s.ranks, s.nodes), [&](std::shared_ptr<PeerExchange> ex) {
    const int r = ex->rank();
    Buffer buf(ex, {s.E, s.H, s.T, two_hop});
    const RankInput& in = all[r];
    DispatchArgs a;
    a.x = in.x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = in.topk.data();
    a.topk_weights = in.weights.data();
    a.num_tokens = in.T;
    a.top_k = s.K;
    a.expert_alignment = 2;
    DispatchResult d = buf.dispatch(a);
    const int64_t P = d.handle.num_expert_rows();
    std::vector<float> out(P * s.H, 0.f), gain(P, 0.f);
    for (int64_t row = 0; row < P; ++row) {
      const int32_t i = d.expert_row_token[row];
      if (i < 0) continue;
      gain[row] = expert_gain(d.recv_topk_idx[i * s.K + d.expert_row_slot[row]] + int64_t(r) * L);
      for (int64_t h = 0; h < s.H; ++h)
        out[row * s.H + h] = gain[row] * reinterpret_cast<const float*>(d.expert_x.data())[row * s.H + h];
    }
    CombineArgs c;
    c.expert_out = out.data();
    c.dtype = DataType::kFloat32;
    c.handle = &d.handle;
    c.weights = d.recv_topk_weights.data();
    CombineResult y = buf.combine(c);
    std::vector<float> g(in.T * s.H);
    for (int64_t i = 0; i < in.T * s.H; ++i) g[i] = std::sin(0.7f * i + r);
    double l = 0;
    for (int64_t i = 0; i < in.T * s.H; ++i) l += double(g[i]) * reinterpret_cast<const float*>(y.y.data())[i];
    loss.v[r] = l;
    if (!grads) return;
    CombineBackwardArgs b;
    b.grad_y = g.data();
    b.dtype = DataType::kFloat32;
    b.handle = &d.handle;
    b.expert_out = out.data();
    b.weights = d.recv_topk_weights.data();
    CombineBackwardResult gb = buf.combine_backward(b);
    std::vector<float> grad_expert_x(P * s.H);
    for (int64_t row = 0; row < P; ++row)
      for (int64_t h = 0; h < s.H; ++h)
        grad_expert_x[row * s.H + h] = gain[row] * reinterpret_cast<const float*>(gb.grad_expert_out.data())[row * s.H + h];
    CombineResult dx = buf.dispatch_backward(grad_expert_x.data(), DataType::kFloat32, d.handle);
    const float* dxv = reinterpret_cast<const float*>(dx.y.data());
    (*grads)[r] = {std::vector<float>(dxv, dxv + in.T * s.H), gb.grad_topk_weights};
  });
  return loss.sum();
}

TEST(BufferTest, GradientsMatchFiniteDifferences) {
  for (bool two_hop : {false, true}) {
    const Shape s{4, 2, 6, 3, 8, 8};
    auto all = all_inputs(s, Routing::kMasked);
    std::vector<std::pair<std::vector<float>, std::vector<float>>> grads;
    moe_loss(s, two_hop, all, &grads);
    const float eps = 1e-2f;
    // A few entries of x and of topk_weights on several ranks, central differences (the loss
    // is linear in each, so the difference is exact up to FP32 rounding).
    for (auto [r, t, j] : {std::tuple{0, 1, 3}, {1, 4, 0}, {2, 0, 7}, {3, 5, 2}}) {
      float& xv = all[r].x[t * s.H + j];
      const float x0 = xv;
      xv = x0 + eps;
      const double lp = moe_loss(s, two_hop, all, nullptr);
      xv = x0 - eps;
      const double lm = moe_loss(s, two_hop, all, nullptr);
      xv = x0;
      EXPECT_NEAR(grads[r].first[t * s.H + j], (lp - lm) / (2 * eps), 2e-3) << "dx rank " << r;
    }
    for (auto [r, t, k] : {std::tuple{0, 1, 1}, {1, 2, 0}, {2, 3, 2}, {3, 4, 1}}) {
      float& wv = all[r].weights[t * s.K + k];
      const float w0 = wv;
      wv = w0 + eps;
      const double lp = moe_loss(s, two_hop, all, nullptr);
      wv = w0 - eps;
      const double lm = moe_loss(s, two_hop, all, nullptr);
      wv = w0;
      const double fd = (lp - lm) / (2 * eps);
      EXPECT_NEAR(grads[r].second[t * s.K + k], fd, 2e-3) << "dw rank " << r << " masked "
                                                          << (all[r].topk[t * s.K + k] < 0);
    }
  }
}

void expect_invalid(const std::function<void()>& f, const char* needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(BufferTest, RejectsBadInput) {
  // Single rank: errors are local.
  spawn_ranks(topology::RankMap::contiguous(1, 1), [&](std::shared_ptr<PeerExchange> ex) {
    Buffer buf(ex, {8, 16, 4, true});
    std::vector<float> x(5 * 16, 1.f);
    std::vector<int64_t> topk = {0, 1, 2, 3};
    DispatchArgs a;
    a.x = x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = topk.data();
    a.num_tokens = 2;
    a.top_k = 2;
    topk[3] = 8;
    expect_invalid([&] { buf.dispatch(a); }, "out of range");
    topk[3] = -2;
    expect_invalid([&] { buf.dispatch(a); }, "out of range");
    topk[3] = 2;
    expect_invalid([&] { buf.dispatch(a); }, "twice");
    topk = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1};
    a.topk_idx = topk.data();
    a.num_tokens = 5;
    expect_invalid([&] { buf.dispatch(a); }, "max_tokens_per_rank");
    a.num_tokens = 2;
    a.dtype = DataType::kFloat8E4M3;
    expect_invalid([&] { buf.dispatch(a); }, "x_scales");
    a.dtype = DataType::kInt32;
    expect_invalid([&] { buf.dispatch(a); }, "dtype");
    a.dtype = DataType::kFloat32;
    DispatchResult d = buf.dispatch(a);
    CombineArgs c;
    c.expert_out = d.expert_x.data();
    c.dtype = DataType::kFloat8E4M3;
    c.handle = &d.handle;
    expect_invalid([&] { buf.combine(c); }, "dtype");
    c.handle = nullptr;
    expect_invalid([&] { buf.combine(c); }, "handle");
  });
  // Experts not divisible by ranks (local check before any message).
  spawn_ranks(topology::RankMap::contiguous(3, 1), [&](std::shared_ptr<PeerExchange> ex) {
    expect_invalid([&] { Buffer buf(ex, {8, 16, 4, true}); }, "multiple");
  });
  // Hidden sizes that differ between ranks: every rank learns it at construction.
  spawn_ranks(topology::RankMap::contiguous(2, 1), [&](std::shared_ptr<PeerExchange> ex) {
    expect_invalid([&] { Buffer buf(ex, {8, ex->rank() == 0 ? 16 : 32, 4, true}); }, "hidden");
  });
  // max_tokens_per_rank may differ between ranks (receive regions use the largest): rank 1
  // sends 5 tokens to rank 0, whose own limit is 4.
  spawn_ranks(topology::RankMap::contiguous(2, 1), [&](std::shared_ptr<PeerExchange> ex) {
    const int64_t T = ex->rank() == 0 ? 4 : 5;
    Buffer buf(ex, {8, 16, T, true});
    std::vector<float> x(T * 16, 1.f);
    std::vector<int64_t> topk(T, 1);  // expert 1 lives on rank 0
    DispatchArgs a;
    a.x = x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = topk.data();
    a.num_tokens = T;
    a.top_k = 1;
    DispatchResult d = buf.dispatch(a);
    EXPECT_EQ(d.num_recv_tokens, ex->rank() == 0 ? 9 : 0);
  });
  // Ranks that disagree on top_k (row size) fail at the count exchange, not by misreading.
  spawn_ranks(topology::RankMap::contiguous(2, 1), [&](std::shared_ptr<PeerExchange> ex) {
    Buffer buf(ex, {8, 16, 4, true});
    std::vector<float> x(4 * 16, 1.f);
    std::vector<int64_t> topk = {0, 4, 1, 5, 2, 6};
    DispatchArgs a;
    a.x = x.data();
    a.dtype = DataType::kFloat32;
    a.topk_idx = topk.data();
    a.num_tokens = 2;
    a.top_k = ex->rank() == 0 ? 2 : 3;
    expect_invalid([&] { buf.dispatch(a); }, "row size");
  });
}

// dispatch_into / combine_into on results kept across calls whose sizes grow and shrink
// (FP32, BF16, FP8; alignment 1-4; recv_x on and off; flat and two-hop): every field equals a
// fresh dispatch()/combine(), the kept vectors start as garbage (0xAB bytes, as memory
// recycled from an earlier result) so padding rows must be written as zeros, expert_x equals
// the rank-dedup reference bit for bit at alignment 1, y equals the closed form
// sum_k w_k * x (identity experts), and a repeated call of the same size keeps the vectors'
// memory (no reallocation).
TEST(BufferTest, DispatchIntoAndCombineIntoReuseKeptResults) {
  const Shape s{4, 2, 25, 3, 8, 40};
  const auto all = all_inputs(s, Routing::kMasked);
  struct Call {
    int64_t T, alignment;
    DataType dtype;
    bool recv_x;
  };
  const std::vector<Call> calls = {{25, 1, DataType::kFloat32, true}, {7, 4, DataType::kBfloat16, false},
                                   {25, 3, DataType::kFloat8E4M3, true}, {0, 1, DataType::kFloat32, true},
                                   {25, 1, DataType::kFloat32, false}, {25, 1, DataType::kFloat32, false}};
  for (bool two_hop : {true, false}) {
    spawn_ranks(topology::RankMap::contiguous(s.ranks, s.nodes), [&](std::shared_ptr<PeerExchange> ex) {
      const int r = ex->rank();
      Buffer buf(ex, {s.E, s.H, s.T, two_hop});
      const RankInput& in = all[r];
      DispatchResult kept;
      CombineResult kept_y;
      for (size_t n = 0; n < calls.size(); ++n) {
        const Call& call = calls[n];
        SCOPED_TRACE(::testing::Message() << "rank " << r << " call " << n << " two_hop " << two_hop);
        const int64_t T = call.T;
        const size_t eb = payload_elem_bytes(call.dtype);
        std::vector<uint16_t> xb(T * s.H);
        bf16_from_float(in.x.data(), T * s.H, xb.data());
        std::vector<uint8_t> q(T * s.H);
        std::vector<float> scales(T * fp8_num_tiles(s.H));
        quantize_fp8_tiles(in.x.data(), T, s.H, false, q.data(), scales.data());
        DispatchArgs a;
        a.x = call.dtype == DataType::kFloat32 ? static_cast<const void*>(in.x.data())
              : call.dtype == DataType::kBfloat16 ? static_cast<const void*>(xb.data())
                                                  : static_cast<const void*>(q.data());
        a.x_scales = call.dtype == DataType::kFloat8E4M3 ? scales.data() : nullptr;
        a.dtype = call.dtype;
        a.topk_idx = in.topk.data();
        a.topk_weights = in.weights.data();
        a.num_tokens = T;
        a.top_k = s.K;
        a.expert_alignment = call.alignment;
        a.recv_x = call.recv_x;
        const DispatchResult fresh = buf.dispatch(a);
        // Garbage in every kept payload vector, at a size that differs from this call's.
        for (auto* v : {&kept.expert_x, &kept.recv_x}) v->assign(v->size() + 5 * n, 0xAB);
        for (auto* v : {&kept.expert_x_scales, &kept.recv_x_scales}) v->assign(v->size() + n, -7.0f);
        if (n == calls.size() - 1) kept.expert_x.resize(fresh.expert_x.size());  // same size: kept as is
        const uint8_t* before = kept.expert_x.data();
        buf.dispatch_into(a, kept);
        if (n == calls.size() - 1) {
          EXPECT_EQ(kept.expert_x.data(), before) << "same size, yet reallocated";
        }
        EXPECT_EQ(kept.num_recv_tokens, fresh.num_recv_tokens);
        EXPECT_EQ(kept.recv_x, fresh.recv_x);
        EXPECT_EQ(kept.recv_x_scales, fresh.recv_x_scales);
        EXPECT_EQ(kept.recv_src_rank, fresh.recv_src_rank);
        EXPECT_EQ(kept.recv_src_token, fresh.recv_src_token);
        EXPECT_EQ(kept.recv_topk_idx, fresh.recv_topk_idx);
        EXPECT_EQ(kept.recv_topk_weights, fresh.recv_topk_weights);
        EXPECT_EQ(kept.num_recv_tokens_per_expert, fresh.num_recv_tokens_per_expert);
        EXPECT_EQ(kept.expert_offsets, fresh.expert_offsets);
        EXPECT_EQ(kept.expert_row_token, fresh.expert_row_token);
        EXPECT_EQ(kept.expert_row_slot, fresh.expert_row_slot);
        ASSERT_EQ(kept.expert_x, fresh.expert_x);
        EXPECT_EQ(kept.expert_x_scales, fresh.expert_x_scales);
        EXPECT_EQ(kept.stats.wire_bytes, fresh.stats.wire_bytes);
        EXPECT_EQ(kept.stats.logical_bytes, fresh.stats.logical_bytes);
        EXPECT_EQ(kept.recv_x.empty(), !call.recv_x || fresh.num_recv_tokens == 0);
        const int64_t P = kept.handle.num_expert_rows();
        ASSERT_EQ(kept.expert_x.size(), P * s.H * eb);
        for (int64_t row = 0; row < P; ++row) {
          if (kept.expert_row_token[row] >= 0) continue;
          for (int64_t b = 0; b < s.H * static_cast<int64_t>(eb); ++b)
            ASSERT_EQ(kept.expert_x[row * s.H * eb + b], 0) << "padding row " << row << " not zero";
        }
        if (call.alignment == 1 && call.dtype == DataType::kFloat32) {
          const ReferenceDispatch ref = reference_dispatch(ReferenceKind::kRankDedup, *ex, s.E, s.H, a);
          EXPECT_EQ(ref.expert_x, kept.expert_x);
        }
        if (call.dtype == DataType::kFloat8E4M3) continue;  // combine takes BF16 / FP32
        // Identity experts: combine expert_x itself, into a kept y of garbage.
        CombineArgs c;
        c.expert_out = kept.expert_x.data();
        c.dtype = call.dtype;
        c.handle = &kept.handle;
        c.weights = kept.recv_topk_weights.data();
        const CombineResult y = buf.combine(c);
        kept_y.y.assign(n % 2 ? y.y.size() : 3, 0xAB);
        buf.combine_into(c, kept_y);
        ASSERT_EQ(kept_y.y, y.y);
        EXPECT_EQ(kept_y.stats.wire_bytes, y.stats.wire_bytes);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < s.H; ++h) {
            double want = 0;
            for (int k = 0; k < s.K; ++k)
              if (in.topk[t * s.K + k] >= 0) want += double(in.weights[t * s.K + k]) * in.x[t * s.H + h];
            const float got = call.dtype == DataType::kFloat32
                                  ? reinterpret_cast<const float*>(kept_y.y.data())[t * s.H + h]
                                  : bf16_to_float(reinterpret_cast<const uint16_t*>(kept_y.y.data())[t * s.H + h]);
            const double tol = call.dtype == DataType::kFloat32 ? 1e-5 : 0.03;
            ASSERT_NEAR(got, want, tol * (1 + std::fabs(want))) << "t " << t << " h " << h;
          }
      }
    });
  }
}

// Same-node rows through the shared-memory RowWindow (heap windows between threads, POSIX
// shared memory) give bit for bit what messages give (no window): dispatch in FP32 and BF16
// (padding rows, cached handle), combine in both, combine_backward and dispatch_backward, on
// one node and on two nodes (flat: window and messages mixed; two-hop: forwarding and its
// reduction through the window), over four consecutive steps so the regions are reused.
TEST(BufferTest, SharedMemoryRowsEqualMessages) {
  struct Case {
    int ranks, nodes;
    bool two_hop;
  };
  for (const Case& cs : {Case{4, 1, false}, Case{3, 1, false}, Case{4, 2, false}, Case{4, 2, true}}) {
    const Shape s{cs.ranks, cs.nodes, 19, 3, 2 * cs.ranks, 24};
    const auto all = all_inputs(s, Routing::kMasked);
    std::vector<std::vector<std::vector<uint8_t>>> got[3];  // [mode][rank][output]
    const testing::WindowMode modes[3] = {testing::WindowMode::kNone, testing::WindowMode::kHeap,
                                          testing::WindowMode::kShm};
    for (int m = 0; m < 3; ++m) {
      got[m].assign(s.ranks, {});
      spawn_ranks(
          topology::RankMap::contiguous(s.ranks, s.nodes),
          [&](std::shared_ptr<PeerExchange> ex) {
            const int r = ex->rank();
            Buffer buf(ex, {s.E, s.H, s.T, cs.two_hop});
            const RankInput& in = all[r];
            auto keep = [&](const void* p, size_t bytes) {
              const uint8_t* b = static_cast<const uint8_t*>(p);
              got[m][r].emplace_back(b, b + bytes);
            };
            for (int step = 0; step < 4; ++step) {
              const int64_t T = step % 2 ? s.T : s.T - 5 - r;
              std::vector<float> x(in.x.begin(), in.x.begin() + T * s.H);
              for (auto& v : x) v = v * (1 + step) - 0.25f * step;
              std::vector<uint16_t> xb(T * s.H);
              bf16_from_float(x.data(), T * s.H, xb.data());
              const bool bf16 = step == 2;
              DispatchArgs a;
              a.x = bf16 ? static_cast<const void*>(xb.data()) : static_cast<const void*>(x.data());
              a.dtype = bf16 ? DataType::kBfloat16 : DataType::kFloat32;
              a.topk_idx = in.topk.data();
              a.topk_weights = in.weights.data();
              a.num_tokens = T;
              a.top_k = s.K;
              a.expert_alignment = 1 + step;
              const DispatchResult d = buf.dispatch(a);
              keep(d.recv_x.data(), d.recv_x.size());
              keep(d.expert_x.data(), d.expert_x.size());
              keep(d.recv_src_token.data(), d.recv_src_token.size() * 4);
              keep(d.recv_topk_weights.data(), d.recv_topk_weights.size() * 4);
              DispatchArgs cached = a;
              cached.cached_handle = &d.handle;
              keep(buf.dispatch(cached).expert_x.data(), d.expert_x.size());
              CombineArgs c;
              c.expert_out = d.expert_x.data();
              c.dtype = a.dtype;
              c.handle = &d.handle;
              c.weights = d.recv_topk_weights.data();
              const CombineResult y = buf.combine(c);
              keep(y.y.data(), y.y.size());
              if (bf16) continue;
              std::vector<float> g(T * s.H);
              for (int64_t i = 0; i < T * s.H; ++i) g[i] = std::cos(0.3f * i + r + step);
              CombineBackwardArgs b;
              b.grad_y = g.data();
              b.dtype = DataType::kFloat32;
              b.handle = &d.handle;
              b.expert_out = d.expert_x.data();
              b.weights = d.recv_topk_weights.data();
              const CombineBackwardResult gb = buf.combine_backward(b);
              keep(gb.grad_expert_out.data(), gb.grad_expert_out.size());
              keep(gb.grad_topk_weights.data(), gb.grad_topk_weights.size() * 4);
              const CombineResult dx = buf.dispatch_backward(gb.grad_expert_out.data(), DataType::kFloat32, d.handle);
              keep(dx.y.data(), dx.y.size());
            }
          },
          modes[m]);
    }
    for (int m = 1; m < 3; ++m)
      for (int r = 0; r < s.ranks; ++r) {
        ASSERT_EQ(got[m][r].size(), got[0][r].size());
        for (size_t i = 0; i < got[0][r].size(); ++i)
          ASSERT_EQ(got[m][r][i], got[0][r][i]) << "ranks " << cs.ranks << " nodes " << cs.nodes << " two_hop "
                                                << cs.two_hop << " window mode " << m << " rank " << r << " output "
                                                << i;
      }
  }
}

// A same-node peer that never joins the dispatch: the rank waiting for its shared-memory rows
// gets a Timeout naming it (not a hang).
TEST(BufferTest, SilentPeerTimesOutOverSharedMemoryRows) {
  const Shape s{2, 1, 8, 2, 4, 16};
  const auto all = all_inputs(s, Routing::kRandom);
  spawn_ranks(
      topology::RankMap::contiguous(2, 1),
      [&](std::shared_ptr<PeerExchange> ex) {
        Buffer buf(ex, {s.E, s.H, s.T, true});
        if (ex->rank() == 1) return;  // never dispatches
        const RankInput& in = all[0];
        DispatchArgs a;
        a.x = in.x.data();
        a.dtype = DataType::kFloat32;
        a.topk_idx = in.topk.data();
        a.num_tokens = in.T;
        a.top_k = s.K;
        try {
          buf.dispatch(a);
          ADD_FAILURE() << "dispatch returned without the peer";
        } catch (const Timeout& e) {
          EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
        }
      },
      testing::WindowMode::kHeap, std::chrono::milliseconds(300));
}

}  // namespace
}  // namespace switchyard::dispatch
