// BufferTest: dispatch and combine on 1..8 ranks run as threads (ThreadExchange), flat and
// two-hop, checked against expectations computed here from every rank's inputs with plain
// loops: which tokens each rank must receive, in which order, with which payload, and what
// combine must return.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"
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

}  // namespace
}  // namespace switchyard::dispatch
