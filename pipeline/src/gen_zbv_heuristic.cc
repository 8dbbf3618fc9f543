// ZBV in the order of the zero-bubble repository's V-schedule heuristic
// (sail-sg/zero-bubble-pipeline-parallelism, megatron/core/pipeline_parallel/zerobubble/
// scheduler/zbv.py at 064369d: PipelineGraph.try_v_schedule and create_schedule), re-stated
// step by step as a builder of our compute-only Schedule (add_p2p adds the transfers).
//
// The heuristic simulates time with per-chunk costs F, B (input gradient), W and a P2P cost C:
// 1. every rank runs one F of its first chunk; 2. from the last rank down, rank i adds first-
// chunk F's (on ranks 0..i) while they fit before the second chunk's first F arrives and the
// memory bound allows, then runs that F; 3. ranks fill with alternating first/second-chunk F's
// until each has as many as its predecessor; 4. 2M rounds of: one B per rank (second-chunk B's
// first, from the last rank down, then first-chunk B's), then at most one F per rank, each
// preceded by pending W's that fit into the wait for its input (or that lower this rank's
// bubble below the largest one seen); 5. the remaining W's. The whole run is repeated with the
// per-rank bubbles of the previous run as "approved" bubbles while that lowers the largest
// bubble, and create_schedule keeps the best of fill_b x fill_f in {true, false}^2.
// Memory: F adds f_mem, B frees b_mem, W frees w_mem with the repository's estimates for
// hidden h and a heads at sequence s: f_mem = 34h + 5as, w_mem = -32h, b_mem = -f_mem - w_mem;
// we use their ratio at h = 4096, a = 8, s = 4096 (its test values): 74 : -42 : -32 (exact
// integers), and the default limit 2 x ranks x f_mem (the 1F1B activation peak).
// Naming inside: cat 0 F, 1 B, 2 W; for F chunk 0 is stage r and chunk 1 stage 2N-1-r; for B
// and W chunk 0 is the loss side (stage 2N-1-r) and chunk 1 stage r, as in the repository.
#include <algorithm>
#include <deque>
#include <tuple>
#include <vector>

#include "generators_internal.h"
#include "switchyard/common/error.h"

namespace switchyard::pipeline::detail {
namespace {

constexpr int64_t kMem[3] = {74, -42, -32};  // f_mem, b_mem, w_mem

struct VRun {
  std::vector<std::vector<std::tuple<int, int, int>>> order;  // per rank: (cat, chunk, micro-batch)
  std::vector<double> stage_bubble;
  double max_bubble = 0;
};

class VHeuristic {
 public:
  VHeuristic(int n, int m, const ZbvCosts& c) : n_(n), m_(m), cost_{c.f, c.b, c.w}, comm_(c.comm) {}

  VRun best() {
    VRun best;
    bool have = false;
    for (bool fill_b : {true, false})
      for (bool fill_f : {true, false}) {
        VRun r = run(fill_f, fill_b, std::vector<double>(n_, -1.0));
        if (!have || r.max_bubble < best.max_bubble) best = std::move(r);
        have = true;
      }
    return best;
  }

 private:
  size_t id(int cat, int chunk, int stage, int mb) const {
    const size_t i = static_cast<size_t>(cat) * 2 * n_ * m_ + static_cast<size_t>(chunk) * n_ * m_ +
                     static_cast<size_t>(stage) * m_ + mb;
    SY_CHECK(i < end_.size());
    return i;
  }

  double max_stage_bubble(int stage = -1) const {
    double b = 0;
    for (double x : bubble_) b = std::max(b, x);
    if (stage >= 0) b = std::max(b, max_approved_ - approved_[stage]);
    return b;
  }

  void put(int cat, int chunk, int stage) {
    const double no_bubble = cur_[stage] + cost_[cat];
    double t = no_bubble;
    const int cnt = count_[stage][cat * 2 + chunk];
    SY_CHECK(cnt < m_);
    SY_CHECK(mem_[stage] + kMem[cat] <= max_mem_);
    if (cat > 0 || chunk > 0) {  // the previous chunk of this micro-batch on this rank is done
      const int last = cat * 2 + chunk - 1;
      SY_CHECK(cat < 2 ? end_[id(last / 2, last % 2, stage, cnt)] >= 0 : end_[id(1, chunk, stage, cnt)] >= 0);
    }
    if (chunk == 1 && cat < 2 && stage < n_ - 1) {
      const double dep = end_[id(cat, chunk, stage + 1, cnt)];
      SY_CHECK(dep >= 0);
      t = std::max(t, dep + comm_ + cost_[cat]);
    }
    if (chunk == 0 && cat < 2 && stage > 0) {
      const double dep = end_[id(cat, chunk, stage - 1, cnt)];
      SY_CHECK(dep >= 0);
      t = std::max(t, dep + comm_ + cost_[cat]);
    }
    if (count_[stage][0] > 0) bubble_[stage] += t - no_bubble;
    end_[id(cat, chunk, stage, cnt)] = t;
    cur_[stage] = t;
    mem_[stage] += kMem[cat];
    order_[stage].emplace_back(cat, chunk, cnt);
    if (cat == 1) pending_w_[stage].push_back(chunk);
    ++count_[stage][cat * 2 + chunk];
  }

  void put_w(int stage) {
    SY_CHECK(!pending_w_[stage].empty());
    const int chunk = pending_w_[stage].front();
    pending_w_[stage].pop_front();
    put(2, chunk, stage);
  }

  // End time of an input; -1 stands for "none", which the repository reads as end_time[-1],
  // the last node (the final W of the last rank): not yet scheduled, so -1 as well.
  double end_or_last(long i) const { return i >= 0 ? end_[static_cast<size_t>(i)] : end_.back(); }

  // Pending W's that fit before the input `fa` arrives; then one more if waiting would raise
  // this rank's bubble above the largest one (when `fill`).
  void fill_with_w(int i, long fa, bool fill) {
    while (!pending_w_[i].empty() && fa >= 0 && end_[fa] + comm_ >= cur_[i] + cost_[2]) put_w(i);
    if (!pending_w_[i].empty() && end_or_last(fa) + comm_ - cur_[i] > max_stage_bubble(i) - bubble_[i] && fill)
      put_w(i);
  }

  VRun run(bool fill_f, bool fill_b, const std::vector<double>& approved) {
    const int n = n_, m = m_;
    count_.assign(n, std::vector<int>(6, 0));
    end_.assign(static_cast<size_t>(6) * n * m, -1.0);
    cur_.assign(n, 0.0);
    mem_.assign(n, 0);
    bubble_.assign(n, 0.0);
    pending_w_.assign(n, {});
    order_.assign(n, {});
    approved_ = approved;
    max_approved_ = *std::max_element(approved.begin(), approved.end());
    max_mem_ = kMem[0] * n * 2;

    for (int i = 0; i < n; ++i) put(0, 0, i);
    for (int i = n - 1; i >= 0; --i) {
      if (i == n - 1) {
        put(0, 1, i);
        continue;
      }
      const double arrive = end_[id(0, 1, i + 1, 0)] + comm_;
      while (mem_[i] + kMem[0] * (2 + i * 2) <= max_mem_ && cur_[i] + cost_[0] <= arrive && count_[i][0] < m)
        for (int j = 0; j <= i; ++j) put(0, 0, j);
      put(0, 1, i);
    }
    int chunk = 0;
    for (int i = 1; i < n; ++i) {
      while (count_[i][0] + count_[i][1] < count_[i - 1][0] + count_[i - 1][1] ||
             (count_[i][1] <= count_[i - 1][1] && count_[i - 1][1] < m)) {
        for (int j = n - 1; j >= i; --j)
          if (count_[j][chunk] < m) put(0, chunk, j);
        chunk = 1 - chunk;
      }
    }
    for (int round = 0; round < 2 * m; ++round) {
      for (int i = 0; i < n; ++i)
        while (mem_[i] + kMem[1] > max_mem_) put_w(i);
      std::vector<int> b0, b1;
      for (int i = 0; i < n; ++i) {
        if (count_[i][3] >= count_[i][2])
          b0.push_back(i);
        else if (i == n - 1)
          b1.push_back(i);
        else if (end_[id(1, 1, i + 1, count_[i][3])] >= 0 || count_[i][2] >= m)
          b1.push_back(i);
        else
          b0.push_back(i);
      }
      std::vector<std::pair<int, int>> bs;
      for (auto it = b1.rbegin(); it != b1.rend(); ++it) bs.emplace_back(*it, 1);
      for (int i : b0) bs.emplace_back(i, 0);
      for (auto [i, ch] : bs) {
        long fa = -1;
        if (ch == 1 && i < n - 1) fa = static_cast<long>(id(1, 1, i + 1, count_[i][3]));
        if (ch == 0 && i > 0) fa = static_cast<long>(id(1, 0, i - 1, count_[i][2]));
        fill_with_w(i, fa, ch == 1 || fill_b);
        put(1, ch, i);
      }
      for (int i = 0; i < n; ++i) {
        if (count_[i][1] >= m) continue;
        int item = -1;
        if (count_[i][1] >= count_[i][0])
          item = 0;
        else if (i == n - 1)
          item = 1;
        else if (end_[id(0, 1, i + 1, count_[i][1])] >= 0)
          item = 1;
        else if (count_[i][0] < m && (i == 0 || end_[id(0, 0, i - 1, count_[i][0])] >= 0))
          item = 0;
        if (item < 0) continue;
        while (mem_[i] + kMem[0] > max_mem_) put_w(i);
        long fa = -1;
        if (item == 0 && i > 0) fa = static_cast<long>(id(0, 0, i - 1, count_[i][0]));
        if (item == 1 && i < n - 1) fa = static_cast<long>(id(0, 1, i + 1, count_[i][1]));
        fill_with_w(i, fa, fill_f);
        put(0, item, i);
      }
    }
    for (int i = 0; i < n; ++i)
      while (!pending_w_[i].empty()) put_w(i);

    VRun out;
    out.order = order_;
    out.stage_bubble = bubble_;
    out.max_bubble = max_stage_bubble();
    if (max_approved_ < 0 || out.max_bubble < max_approved_) {
      VRun again = run(fill_f, fill_b, out.stage_bubble);
      if (again.max_bubble < out.max_bubble) return again;
    }
    return out;
  }

  int n_, m_;
  double cost_[3];
  double comm_;
  std::vector<std::vector<int>> count_;  // [rank][cat * 2 + chunk]
  std::vector<double> end_, cur_, bubble_, approved_;
  std::vector<int64_t> mem_;
  std::vector<std::deque<int>> pending_w_;
  std::vector<std::vector<std::tuple<int, int, int>>> order_;
  double max_approved_ = -1;
  int64_t max_mem_ = 0;
};

}  // namespace

Schedule gen_zbv_heuristic(int n, int m, const ZbvCosts& costs) {
  SY_REQUIRE(costs.f > 0 && costs.b > 0 && costs.w > 0 && costs.comm >= 0,
             "schedule zbv (zero-bubble heuristic): costs F = " << costs.f << ", B = " << costs.b << ", W = "
                                                                << costs.w << " must be > 0 and C = " << costs.comm
                                                                << " >= 0");
  const VRun best = VHeuristic(n, m, costs).best();
  Schedule s = v_placement("zbv", n, m);
  const int S = s.num_stages;
  for (int r = 0; r < n; ++r)
    for (auto [cat, chunk, mb] : best.order[r]) {
      const bool first_half = cat == 0 ? chunk == 0 : chunk == 1;
      const int stage = first_half ? r : S - 1 - r;
      const OpKind kind = cat == 0 ? OpKind::kForward : (cat == 1 ? OpKind::kBackwardInput : OpKind::kBackwardWeight);
      s.ranks[r].push_back(make_compute(kind, stage, mb));
    }
  return s;
}

}  // namespace switchyard::pipeline::detail
