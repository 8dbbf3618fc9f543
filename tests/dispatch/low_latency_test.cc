// LowLatencyTest: the decode mode on 2 and 4 thread ranks: per-expert slots, counts,
// FP8 cast inside dispatch (compared with quantize_fp8_tiles of the source rows), the
// split send/receive hook, and the weighted BF16 combine against a float sum; over the
// shared-memory slot path (heap windows, so TSan sees the ordering; and POSIX shm), over
// messages only, and mixed (window inside a node, messages across); several consecutive
// calls (double buffering), timeouts when a peer does not take part.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <random>
#include <tuple>
#include <vector>

#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/fp8.h"
#include "thread_exchange.h"

namespace switchyard::dispatch {
namespace {

struct LlInput {
  std::vector<uint16_t> x;
  std::vector<int64_t> topk;
  std::vector<float> w;
};

LlInput make_ll_input(int rank, int64_t T, int K, int E, int64_t H, int round = 0) {
  LlInput in;
  std::mt19937 rng(300 + rank + 17 * round);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  in.x.resize(T * H);
  for (auto& v : in.x) v = bf16_from_float(u(rng));
  in.topk.resize(T * K);
  in.w.resize(T * K);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int> perm(E);
    for (int e = 0; e < E; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int k = 0; k < K; ++k) {
      in.topk[t * K + k] = (t + k) % 7 == 3 ? -1 : perm[k];
      in.w[t * K + k] = 0.1f + 0.2f * k;
    }
  }
  return in;
}

// `rounds` consecutive dispatch(+combine) calls on one Buffer with fresh inputs each time;
// with combine_every_round false, combine only runs in the last round.
void check_low_latency(int R, int N, bool fp8, testing::WindowMode mode = testing::WindowMode::kHeap, int rounds = 1,
                       bool combine_every_round = true) {
  const int E = 16, K = 5, L = E / R;
  const int64_t Tmax = 12, H = 256, S = fp8_num_tiles(H);
  testing::spawn_ranks(topology::RankMap::contiguous(R, N), [&](std::shared_ptr<PeerExchange> ex) {
    const int r = ex->rank();
    BufferOptions o{E, H, Tmax, true, Tmax};
    Buffer buf(ex, o);
    for (int round = 0; round < rounds; ++round) {
    std::vector<LlInput> all;
    std::vector<int64_t> T(R);
    for (int s = 0; s < R; ++s) {
      T[s] = s == (1 + round) % R ? 0 : Tmax - (s + round) % 3;  // one rank sends nothing
      all.push_back(make_ll_input(s, T[s], K, E, H, round));
    }
    LowLatencyDispatchArgs a;
    a.x = all[r].x.data();
    a.topk_idx = all[r].topk.data();
    a.topk_weights = all[r].w.data();
    a.num_tokens = T[r];
    a.top_k = K;
    a.use_fp8 = fp8;
    LowLatencyRecvHook hook = buf.low_latency_dispatch_send(a);
    LowLatencyView v = hook();  // compute could run before this
    ASSERT_EQ(v.slots_per_expert, R * Tmax);
    for (int j = 0; j < L; ++j) {
      // Expected rows of local expert j: (src, token) ascending.
      std::vector<std::pair<int, int64_t>> want;
      for (int s = 0; s < R; ++s)
        for (int64_t t = 0; t < T[s]; ++t)
          for (int k = 0; k < K; ++k)
            if (all[s].topk[t * K + k] == int64_t(r) * L + j) want.emplace_back(s, t);
      ASSERT_EQ(v.count[j], static_cast<int32_t>(want.size())) << "rank " << r << " expert " << j;
      // Rows come in one block per source rank (blocks in claim order), tokens ascending
      // inside a block: sorting by (src, token) must give exactly `want`.
      std::vector<std::tuple<int, int64_t, int64_t>> got;
      for (int32_t i = 0; i < v.count[j]; ++i) {
        const int64_t at = j * v.slots_per_expert + i;
        got.emplace_back(v.src_rank[at], v.src_token[at], at);
        if (i > 0 && v.src_rank[at] == v.src_rank[at - 1]) {
          EXPECT_LT(v.src_token[at - 1], v.src_token[at]);
        }
      }
      std::sort(got.begin(), got.end());
      for (size_t i = 0; i < want.size(); ++i) {
        const auto [src_rank, src_token, at] = got[i];
        EXPECT_EQ(src_rank, want[i].first);
        EXPECT_EQ(src_token, want[i].second);
        const uint16_t* src = all[want[i].first].x.data() + want[i].second * H;
        if (fp8) {
          std::vector<uint8_t> q(H);
          std::vector<float> sc(S);
          quantize_fp8_tiles(src, 1, H, false, q.data(), sc.data());
          EXPECT_EQ(0, std::memcmp(v.x + at * H, q.data(), H));
          EXPECT_EQ(0, std::memcmp(v.scales + at * S, sc.data(), S * 4));
        } else {
          EXPECT_EQ(0, std::memcmp(v.x + at * 2 * H, src, 2 * H));
        }
      }
    }
    if (!combine_every_round && round + 1 < rounds) continue;
    // Experts: out = dequantized input * (1 + global expert / 8), BF16.
    std::vector<uint16_t> out(L * v.slots_per_expert * H, 0);
    for (int j = 0; j < L; ++j)
      for (int i = 0; i < v.count[j]; ++i) {
        const int64_t at = j * v.slots_per_expert + i;
        std::vector<float> row(H);
        if (fp8) {
          dequantize_fp8_tiles(v.x + at * H, v.scales + at * S, 1, H, row.data());
        } else {
          bf16_to_float(reinterpret_cast<const uint16_t*>(v.x) + at * H, H, row.data());
        }
        for (int64_t h = 0; h < H; ++h) out[at * H + h] = bf16_from_float(row[h] * (1 + float(r * L + j) / 8));
      }
    LowLatencyCombineHook combine_hook = buf.low_latency_combine_send(out.data());
    const uint16_t* y = combine_hook();
    for (int64_t t = 0; t < T[r]; ++t) {
      std::vector<float> q(H);
      std::vector<uint8_t> code(H);
      std::vector<float> sc(S);
      if (fp8) {
        quantize_fp8_tiles(all[r].x.data() + t * H, 1, H, false, code.data(), sc.data());
        dequantize_fp8_tiles(code.data(), sc.data(), 1, H, q.data());
      } else {
        bf16_to_float(all[r].x.data() + t * H, H, q.data());
      }
      for (int64_t h = 0; h < H; ++h) {
        double want = 0;
        for (int k = 0; k < K; ++k) {
          const int64_t e = all[r].topk[t * K + k];
          if (e >= 0) want += double(all[r].w[t * K + k]) * double(bf16_to_float(bf16_from_float(q[h] * (1 + float(e) / 8))));
        }
        // BF16 partial sums and output: relative 2^-7 per rounding, a few roundings.
        ASSERT_NEAR(bf16_to_float(y[t * H + h]), want, 0.03 * (std::fabs(want) + 0.1))
            << "rank " << r << " t " << t << " round " << round;
      }
    }
    }
  }, mode);
}

TEST(LowLatencyTest, TwoRanksOneNodeFp8) { check_low_latency(2, 1, true); }
TEST(LowLatencyTest, FourRanksTwoNodesFp8) { check_low_latency(4, 2, true); }
TEST(LowLatencyTest, FourRanksBf16) { check_low_latency(4, 1, false); }
TEST(LowLatencyTest, ConsecutiveCallsReuseTheSlots) { check_low_latency(4, 1, true, testing::WindowMode::kHeap, 5); }
TEST(LowLatencyTest, ConsecutiveDispatchesWithoutCombine) {
  check_low_latency(2, 1, true, testing::WindowMode::kHeap, 4, false);
}
TEST(LowLatencyTest, MixedWindowAndMessagesOverRounds) {
  check_low_latency(4, 2, false, testing::WindowMode::kHeap, 3);
}
TEST(LowLatencyTest, MessagesOnly) { check_low_latency(4, 1, true, testing::WindowMode::kNone, 3); }
TEST(LowLatencyTest, SharedMemoryWindows) { check_low_latency(4, 2, true, testing::WindowMode::kShm, 3); }

// Rank 1 rejects its own input (top_k too large) and sends nothing: rank 0's receive hook
// throws Timeout naming rank 1 after the exchange's timeout, and the Buffer refuses further
// low-latency calls (the ranks' call sequences no longer match).
void check_timeout(testing::WindowMode mode) {
  const int E = 4, K = 2;
  const int64_t H = 128, Tmax = 4;
  testing::spawn_ranks(
      topology::RankMap::contiguous(2, 1),
      [&](std::shared_ptr<PeerExchange> ex) {
        Buffer buf(ex, {E, H, Tmax, true, Tmax});
        std::vector<uint16_t> x(Tmax * H, bf16_from_float(1.f));
        std::vector<int64_t> topk = {0, 3, 1, 2, 2, 0, 3, 1};
        LowLatencyDispatchArgs a;
        a.x = x.data();
        a.topk_idx = topk.data();
        a.num_tokens = Tmax;
        a.top_k = ex->rank() == 1 ? kLowLatencyMaxTopK + 1 : K;
        if (ex->rank() == 1) {
          EXPECT_THROW(buf.low_latency_dispatch_send(a), InvalidArgument);
          return;
        }
        LowLatencyRecvHook hook = buf.low_latency_dispatch_send(a);
        const auto t0 = std::chrono::steady_clock::now();
        try {
          hook();
          ADD_FAILURE() << "no timeout";
        } catch (const Timeout& e) {
          EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
        }
        EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
        EXPECT_THROW(buf.low_latency_dispatch_send(a), InvalidArgument);
      },
      mode, std::chrono::milliseconds(300));
}

TEST(LowLatencyTest, SilentPeerTimesOutOverWindow) { check_timeout(testing::WindowMode::kHeap); }
TEST(LowLatencyTest, SilentPeerTimesOutOverMessages) { check_timeout(testing::WindowMode::kNone); }

TEST(LowLatencyTest, RejectsBadInput) {
  testing::spawn_ranks(topology::RankMap::contiguous(1, 1), [&](std::shared_ptr<PeerExchange> ex) {
    Buffer plain(ex, {8, 128, 4, true});
    std::vector<uint16_t> x(8 * 128);
    std::vector<int64_t> topk(8 * 2, 0);
    for (int t = 0; t < 8; ++t) topk[t * 2 + 1] = 1;
    LowLatencyDispatchArgs a;
    a.x = x.data();
    a.topk_idx = topk.data();
    a.num_tokens = 2;
    a.top_k = 2;
    EXPECT_THROW(plain.low_latency_dispatch(a), InvalidArgument);  // LL mode off
    Buffer buf(ex, {8, 128, 4, true, 4});
    a.num_tokens = 5;
    EXPECT_THROW(buf.low_latency_dispatch(a), InvalidArgument);  // too many tokens
    a.num_tokens = 2;
    a.top_k = kLowLatencyMaxTopK + 1;
    EXPECT_THROW(buf.low_latency_dispatch(a), InvalidArgument);
    a.top_k = 2;
    topk[1] = 0;
    EXPECT_THROW(buf.low_latency_dispatch(a), InvalidArgument);  // same expert twice
  });
}

}  // namespace
}  // namespace switchyard::dispatch
