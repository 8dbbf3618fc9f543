// Compute-only orders of the single-direction schedules: 1F1B, interleaved 1F1B (Megatron),
// ZB-H1 (ZeroBubble's handcrafted memory-neutral schedule) and ZBV (V placement, greedy
// unit-time order). add_p2p() inserts the transfers afterwards.
#include <algorithm>
#include <deque>

#include "generators_internal.h"
#include "switchyard/common/error.h"

namespace switchyard::pipeline::detail {

namespace {

Schedule linear_placement(const char* name, int num_ranks, int num_microbatches) {
  Schedule s;
  s.name = name;
  s.num_stages = num_ranks;
  s.num_microbatches = num_microbatches;
  s.paths.emplace_back();
  for (int r = 0; r < num_ranks; ++r) s.paths[0].push_back(r);
  s.microbatch_path.assign(num_microbatches, 0);
  s.ranks.resize(num_ranks);
  return s;
}

}  // namespace

Schedule v_placement(const char* name, int num_ranks, int num_microbatches) {
  Schedule s;
  s.name = name;
  const int S = 2 * num_ranks;
  s.num_stages = S;
  s.num_microbatches = num_microbatches;
  s.paths.emplace_back();
  for (int st = 0; st < S; ++st) s.paths[0].push_back(st < num_ranks ? st : S - 1 - st);
  s.microbatch_path.assign(num_microbatches, 0);
  s.ranks.resize(num_ranks);
  return s;
}

// Rank r: min(N-r-1, M) warm-up forwards, then (F, BW) pairs, then the remaining BWs.
Schedule gen_1f1b(int n, int m) {
  Schedule s = linear_placement("1f1b", n, m);
  for (int r = 0; r < n; ++r) {
    auto& list = s.ranks[r];
    const int warmup = std::min(n - r - 1, m);
    for (int i = 0; i < warmup; ++i) list.push_back(make_compute(OpKind::kForward, r, i));
    for (int i = 0; i < m - warmup; ++i) {
      list.push_back(make_compute(OpKind::kForward, r, warmup + i));
      list.push_back(make_compute(OpKind::kBackward, r, i));
    }
    for (int i = m - warmup; i < m; ++i) list.push_back(make_compute(OpKind::kBackward, r, i));
  }
  return s;
}

// Megatron's interleaved schedule: v chunks per rank, stage c*N + r on rank r. Virtual
// micro-step k runs chunk (k mod N*v) / N (reversed for backward) of micro-batch
// (k / (N*v)) * N + k mod N. Warm-up is 2(N-r-1) + (v-1)N micro-steps.
Schedule gen_interleaved_1f1b(int n, int m, int v) {
  Schedule s;
  s.name = "interleaved-1f1b";
  s.num_stages = n * v;
  s.num_microbatches = m;
  s.paths.emplace_back();
  for (int st = 0; st < n * v; ++st) s.paths[0].push_back(st % n);
  s.microbatch_path.assign(m, 0);
  s.ranks.resize(n);
  const int total = m * v;
  auto stage_of = [&](int k, int r, bool forward) {
    int chunk = (k % (n * v)) / n;
    if (!forward) chunk = v - 1 - chunk;
    return chunk * n + r;
  };
  auto mb_of = [&](int k) { return (k / (n * v)) * n + k % n; };
  for (int r = 0; r < n; ++r) {
    auto& list = s.ranks[r];
    const int warmup = std::min(2 * (n - r - 1) + (v - 1) * n, total);
    for (int k = 0; k < warmup; ++k) list.push_back(make_compute(OpKind::kForward, stage_of(k, r, true), mb_of(k)));
    for (int k = 0; k < total - warmup; ++k) {
      const int kf = warmup + k;
      list.push_back(make_compute(OpKind::kForward, stage_of(kf, r, true), mb_of(kf)));
      list.push_back(make_compute(OpKind::kBackward, stage_of(k, r, false), mb_of(k)));
    }
    for (int k = total - warmup; k < total; ++k)
      list.push_back(make_compute(OpKind::kBackward, stage_of(k, r, false), mb_of(k)));
  }
  return s;
}

// ZB-H1: the 1F1B order of F and B (input gradient only), with each W deferred: rank r keeps
// up to r+1 W's pending in the steady phase (so every rank holds at most N in-flight
// micro-batches, the 1F1B peak of rank 0) and drains them after its B's in the cool-down,
// one W after each B, the rest at the end.
Schedule gen_zb_h1(int n, int m) {
  Schedule s = linear_placement("zb-h1", n, m);
  for (int r = 0; r < n; ++r) {
    auto& list = s.ranks[r];
    const int warmup = std::min(n - r - 1, m);
    const int defer = r;  // W's pending in the steady phase
    int next_w = 0;
    auto w = [&]() { list.push_back(make_compute(OpKind::kBackwardWeight, r, next_w++)); };
    for (int i = 0; i < warmup; ++i) list.push_back(make_compute(OpKind::kForward, r, i));
    int next_b = 0;
    for (int i = 0; i < m - warmup; ++i) {
      list.push_back(make_compute(OpKind::kForward, r, warmup + i));
      list.push_back(make_compute(OpKind::kBackwardInput, r, next_b++));
      if (next_b - next_w > defer) w();
    }
    while (next_b < m) {
      list.push_back(make_compute(OpKind::kBackwardInput, r, next_b++));
      if (next_b - next_w > defer) w();
    }
    while (next_w < m) w();
  }
  return s;
}

// ZBV: stage s on rank s (s < N) or 2N-1-s (the V), so rank r holds stages r and 2N-1-r and
// the last rank turns the V locally. The order comes from a greedy list schedule in unit time
// (F = B = W = 1): each tick every rank runs one ready op, preferring B (critical path), then F
// (the later stage first; a new micro-batch enters the rank's first stage only while fewer than
// N micro-batches have their first-stage W pending, which bounds activations by 2N half-stage
// chunks, the 1F1B peak), then the oldest pending W.
Schedule gen_zbv(int n, int m) {
  Schedule s = v_placement("zbv", n, m);
  const int S = s.num_stages;
  const int kNotDone = -1;
  std::vector<std::vector<int>> f_done(S, std::vector<int>(m, kNotDone)), b_done = f_done;
  std::vector<int> next_f(S, 0), next_b(S, 0), in_flight(n, 0);
  std::vector<std::deque<std::pair<int, int>>> w_queue(n);
  int remaining = 3 * S * m;
  const int cap = n;
  for (int t = 0; remaining > 0; ++t) {
    SY_CHECK(t < 16 * S * m + 64);
    struct Pick {
      OpKind kind;
      int stage, mb;
    };
    std::vector<Pick> picks;
    for (int r = 0; r < n; ++r) {
      const int stages[2] = {S - 1 - r, r};  // later stage first: it is closer to the loss
      bool picked = false;
      for (int st : stages) {  // B
        const int mb = next_b[st];
        if (mb >= m) continue;
        bool ready = f_done[st][mb] != kNotDone && f_done[st][mb] < t;
        if (st + 1 < S) ready = ready && b_done[st + 1][mb] != kNotDone && b_done[st + 1][mb] < t;
        if (ready) {
          picks.push_back({OpKind::kBackwardInput, st, mb});
          picked = true;
          break;
        }
      }
      if (picked) continue;
      {
        for (int st : stages) {  // F
          const int mb = next_f[st];
          if (mb >= m) continue;
          if (st == r && in_flight[r] >= cap) continue;
          if (st == 0 || (f_done[st - 1][mb] != kNotDone && f_done[st - 1][mb] < t)) {
            picks.push_back({OpKind::kForward, st, mb});
            picked = true;
            break;
          }
        }
      }
      if (picked) continue;
      if (!w_queue[r].empty()) {
        picks.push_back({OpKind::kBackwardWeight, w_queue[r].front().first, w_queue[r].front().second});
        w_queue[r].pop_front();
      }
    }
    for (const Pick& p : picks) {
      const int r = s.paths[0][p.stage];
      s.ranks[r].push_back(make_compute(p.kind, p.stage, p.mb));
      --remaining;
      if (p.kind == OpKind::kForward) {
        f_done[p.stage][p.mb] = t;
        ++next_f[p.stage];
        if (p.stage == r) ++in_flight[r];
      } else if (p.kind == OpKind::kBackwardInput) {
        b_done[p.stage][p.mb] = t;
        ++next_b[p.stage];
        w_queue[r].push_back({p.stage, p.mb});
      } else if (p.stage == r) {
        --in_flight[r];
      }
    }
  }
  return s;
}

}  // namespace switchyard::pipeline::detail
