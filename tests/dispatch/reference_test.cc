// ReferenceTest: the two flat references (naive per (token, expert), rank-deduplicated)
// against Buffer::dispatch/combine and against a closed form: identity experts give
// y = sum_k w_k x.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "switchyard/dispatch/reference.h"
#include "thread_exchange.h"

namespace switchyard::dispatch {
namespace {

using comm::DataType;

TEST(ReferenceTest, MatchesBufferAndClosedForm) {
  const int R = 4, N = 2, E = 16, K = 4;
  const int64_t T = 25, H = 32;
  for (ReferenceKind kind : {ReferenceKind::kNaive, ReferenceKind::kRankDedup}) {
    testing::spawn_ranks(topology::RankMap::contiguous(R, N), [&](std::shared_ptr<PeerExchange> ex) {
      const int r = ex->rank();
      std::mt19937 rng(50 + r);
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      std::vector<float> x(T * H), w(T * K);
      std::vector<int64_t> topk(T * K);
      for (auto& v : x) v = u(rng);
      for (int64_t t = 0; t < T; ++t)
        for (int k = 0; k < K; ++k) {
          topk[t * K + k] = (t * 5 + k * 3 + r) % E;  // distinct per row since 3k mod 16 differs
          if ((t + k) % 5 == 0) topk[t * K + k] = -1;
          w[t * K + k] = 0.5f + 0.1f * k;
        }
      DispatchArgs a;
      a.x = x.data();
      a.dtype = DataType::kFloat32;
      a.topk_idx = topk.data();
      a.topk_weights = w.data();
      a.num_tokens = T;
      a.top_k = K;
      ReferenceDispatch ref = reference_dispatch(kind, *ex, E, H, a);
      Buffer buf(ex, {E, H, T, true});
      DispatchResult d = buf.dispatch(a);
      // Same expert-major rows, bit for bit (alignment 1).
      EXPECT_EQ(ref.expert_offsets, d.expert_offsets);
      EXPECT_EQ(ref.expert_x, d.expert_x);
      for (size_t row = 0; row < ref.row_src_rank.size(); ++row) {
        EXPECT_EQ(ref.row_src_rank[row], d.recv_src_rank[d.expert_row_token[row]]);
        EXPECT_EQ(ref.row_src_token[row], d.recv_src_token[d.expert_row_token[row]]);
      }
      CombineResult y = reference_combine(*ex, ref, ref.expert_x.data(), DataType::kFloat32, H, w.data());
      const float* yv = reinterpret_cast<const float*>(y.y.data());
      for (int64_t t = 0; t < T; ++t) {
        float sw = 0;
        for (int k = 0; k < K; ++k) sw += topk[t * K + k] >= 0 ? w[t * K + k] : 0.f;
        for (int64_t h = 0; h < H; ++h) ASSERT_NEAR(yv[t * H + h], sw * x[t * H + h], 1e-5f);
      }
      // The naive reference moves more bytes than the deduplicated one.
      if (kind == ReferenceKind::kNaive) {
        int64_t pairs = 0;
        for (int64_t e : topk) pairs += e >= 0;
        EXPECT_EQ(ref.stats.logical_bytes, pairs * ref.stats.row_bytes);
      }
    });
  }
}

}  // namespace
}  // namespace switchyard::dispatch
