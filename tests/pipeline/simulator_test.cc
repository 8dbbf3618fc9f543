// Simulator against independent references: a naive longest-path computation over the compute
// chunks (zero latency), hand-derived timings with P2P latency, and the closed-form bubbles of
// DeepSeek's DualPipe README over the grid ranks {2,4,8} x micro-batches {2p, 2p+2, 4p} x
// several (F, B, W, F&B), each under its stated precondition.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/simulator.h"
#include "switchyard/pipeline/timeline.h"
#include "switchyard/pipeline/verifier.h"
#include <nlohmann/json.hpp>

namespace switchyard::pipeline {
namespace {

// Makespan as the longest path through the chunk DAG: each chunk starts after the previous
// chunk on its rank and after the chunks that produce its inputs (communication is free).
double naive_makespan(const Schedule& s, const SimOptions& o) {
  std::map<std::tuple<int, int, int>, double> f_end, b_end;  // (rank-independent) stage, mb
  std::vector<size_t> pos(s.num_ranks(), 0);
  std::vector<double> rank_free(s.num_ranks(), 0);
  double makespan = 0;
  auto get = [](const std::map<std::tuple<int, int, int>, double>& m, int st, int mb, int rep) -> double {
    auto it = m.find({st, mb, rep});
    return it == m.end() ? -1 : it->second;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < s.num_ranks(); ++r) {
      while (pos[r] < s.ranks[r].size()) {
        const Action& a = s.ranks[r][pos[r]];
        const int rep = s.replica(r);
        if (!is_compute(a.kind)) {
          ++pos[r];
          continue;
        }
        double ready = rank_free[r];
        bool ok = true;
        auto need = [&](double t) {
          if (t < 0) ok = false;
          ready = std::max(ready, t);
        };
        auto fwd = [&](int st, int mb) {
          if (st > 0) need(get(f_end, st - 1, mb, rep));
        };
        auto bwd = [&](int st, int mb) {
          need(get(f_end, st, mb, rep));
          if (st + 1 < s.num_stages) need(get(b_end, st + 1, mb, rep));
        };
        if (a.kind == OpKind::kForward) fwd(a.stage, a.microbatch);
        if (a.kind == OpKind::kBackward || a.kind == OpKind::kBackwardInput) bwd(a.stage, a.microbatch);
        if (a.kind == OpKind::kBackwardWeight) need(get(b_end, a.stage, a.microbatch, rep));
        if (a.kind == OpKind::kForwardBackward) {
          fwd(a.stage, a.microbatch);
          bwd(a.bwd_stage, a.bwd_microbatch);
        }
        if (!ok) break;
        const double end = ready + o.duration(a.kind);
        if (a.kind == OpKind::kForward || a.kind == OpKind::kForwardBackward) f_end[{a.stage, a.microbatch, rep}] = end;
        if (a.kind == OpKind::kBackward || a.kind == OpKind::kBackwardInput) b_end[{a.stage, a.microbatch, rep}] = end;
        if (a.kind == OpKind::kForwardBackward) b_end[{a.bwd_stage, a.bwd_microbatch, rep}] = end;
        rank_free[r] = end;
        makespan = std::max(makespan, end);
        ++pos[r];
        progress = true;
      }
    }
  }
  return makespan;
}

SimOptions times(double f, double b, double w, double fb = std::nan("")) {
  SimOptions o;
  o.f = f;
  o.b = b;
  o.w = w;
  o.fb = fb;
  return o;
}

TEST(SimulatorTest, MatchesLongestPathWhenCommunicationIsFree) {
  for (ScheduleKind k : all_schedule_kinds()) {
    for (int n : {2, 4, 8}) {
      Schedule s = generate(k, {n, 4 * n});
      for (SimOptions o : {times(1, 2, 1), times(1, 1.5, 0.25, 2.0), times(2, 3, 1, 4)}) {
        SimResult res = simulate(s, o);
        EXPECT_DOUBLE_EQ(res.makespan, naive_makespan(s, o)) << schedule_kind_name(k) << " ranks " << n;
      }
    }
  }
}

TEST(SimulatorTest, P2PLatencyAddsToTheCriticalPath) {
  // Two ranks, one micro-batch: F0, send, F1, BW1, send, BW0 in sequence.
  Schedule s = generate(ScheduleKind::k1F1B, {2, 1});
  SimOptions o = times(1, 2, 1);
  o.p2p_latency = 0.25;
  SimResult res = simulate(s, o);
  EXPECT_DOUBLE_EQ(res.makespan, 2 * 1 + 2 * 2 + 2 * 0.25);
  EXPECT_DOUBLE_EQ(res.busy[0], 3.0);
  EXPECT_DOUBLE_EQ(res.bubble[1], res.makespan - 3.0);
}

TEST(SimulatorTest, OneFOneBBubbleIsClosedForm) {
  // (PP-1)(F+B) on every rank; precondition: micro-batches >= ranks.
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 2 * p + 2, 4 * p})
      for (SimOptions o : {times(1, 2, 1), times(1, 1, 0.5), times(2, 3, 1)}) {
        SimResult res = simulate(generate(ScheduleKind::k1F1B, {p, m}), o);
        const double expect = (p - 1) * (o.f + o.b);
        for (int r = 0; r < p; ++r) EXPECT_DOUBLE_EQ(res.bubble[r], expect) << "p " << p << " m " << m;
        EXPECT_EQ(res.peak_activations[0], p);
        EXPECT_DOUBLE_EQ(expect, closed_form_bubble("1f1b", p, o));
      }
}

TEST(SimulatorTest, InterleavedOneFOneBBubbleIsClosedForm) {
  // (PP-1)(F+B) with per-chunk F and B, i.e. the 1F1B bubble divided by the chunks per rank;
  // precondition: micro-batches a multiple of ranks.
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 4 * p})
      for (int v : {2, 3})
        for (SimOptions o : {times(1, 2, 1), times(1, 1, 0.5)}) {
          GeneratorOptions g;
          g.num_ranks = p;
          g.num_microbatches = m;
          g.num_chunks = v;
          SimResult res = simulate(generate(ScheduleKind::kInterleaved1F1B, g), o);
          EXPECT_DOUBLE_EQ(res.max_bubble(), closed_form_bubble("interleaved-1f1b", p, o)) << "p " << p << " m " << m;
          EXPECT_DOUBLE_EQ(res.max_bubble(), (p - 1) * (o.f + o.b));
        }
}

TEST(SimulatorTest, ZeroBubbleH1BubbleIsClosedForm) {
  // (PP-1)(F+B-2W) with B the full backward; precondition: micro-batches >= ranks, W <= F and
  // W <= B-W (the deferred W's fit into the cool-down gaps).
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 2 * p + 2, 4 * p})
      for (SimOptions o : {times(1, 2, 1), times(1, 1, 0.5), times(2, 3, 1), times(1, 3, 1)}) {
        SimResult res = simulate(generate(ScheduleKind::kZBH1, {p, m}), o);
        EXPECT_DOUBLE_EQ(res.max_bubble(), closed_form_bubble("zb-h1", p, o))
            << "p " << p << " m " << m << " f " << o.f << " b " << o.b << " w " << o.w;
        EXPECT_LE(res.peak_activations[0], p);  // no more memory than 1F1B
      }
}

TEST(SimulatorTest, DualPipeBubbleIsClosedForm) {
  // (PP/2-1)(F&B+B-3W), 2x parameters, PP+1 activations; precondition: F = B-W (forward as
  // long as the input-gradient backward), W <= F, and B <= F&B <= F+B. docs/pipeline.md
  // explains the gap outside it.
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 2 * p + 2, 4 * p})
      for (SimOptions o : {times(1, 2, 1, 2), times(1, 2, 1, 2.5), times(1, 2, 1, 3), times(2, 2.5, 0.5, 4),
                           times(1, 1.5, 0.5, 2)}) {
        SimResult res = simulate(generate(ScheduleKind::kDualPipe, {p, m}), o);
        EXPECT_DOUBLE_EQ(res.max_bubble(), (p / 2.0 - 1) * (o.fb + o.b - 3 * o.w))
            << "p " << p << " m " << m << " f " << o.f << " b " << o.b << " w " << o.w << " fb " << o.fb;
        EXPECT_EQ(res.parameter_copies, 2);
        EXPECT_EQ(*std::max_element(res.peak_activations.begin(), res.peak_activations.end()), p + 1);
      }
}

TEST(SimulatorTest, DualPipeVMatchesDualPipeOnHalfTheDevices) {
  // PP = p stages on p/2 devices: same bubble as DualPipe with PP = p, one parameter copy,
  // PP+1 activations (in stage units, a stage being half a device's layers).
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 2 * p + 2, 4 * p})
      for (SimOptions o : {times(1, 2, 1, 2.5), times(2, 2.5, 0.5, 4)}) {
        SimResult res = simulate(generate(ScheduleKind::kDualPipeV, {p / 2, m}), o);
        EXPECT_DOUBLE_EQ(res.max_bubble(), (p / 2.0 - 1) * (o.fb + o.b - 3 * o.w)) << "p " << p << " m " << m;
        EXPECT_DOUBLE_EQ(res.max_bubble(), closed_form_bubble("dualpipev", p / 2, o));
        EXPECT_EQ(res.parameter_copies, 1);
        EXPECT_EQ(*std::max_element(res.peak_activations.begin(), res.peak_activations.end()), p + 1);
      }
}

TEST(SimulatorTest, ZbvReachesTheFillLowerBoundWhenBalanced) {
  // With F = B-W = W and M a multiple of the ranks, the greedy ZBV order's bubble is (N-1)F:
  // the lower bound of any schedule, since the last rank's first F cannot start before (N-1)F
  // and every rank has the same work.
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 4 * p})
      for (SimOptions o : {times(1, 2, 1), times(2, 4, 2)}) {
        SimResult res = simulate(generate(ScheduleKind::kZBV, {p, m}), o);
        EXPECT_DOUBLE_EQ(res.max_bubble(), (p - 1) * o.f) << "p " << p << " m " << m;
        EXPECT_LE(*std::max_element(res.peak_activations.begin(), res.peak_activations.end()), 2 * p);
      }
}

TEST(SimulatorTest, DerivesThePairFromCommunicationTimes) {
  // F = 1 with 0.5 of it dispatch/combine, B = 2 with 1 of it: compute 0.5 + 1, comm 0.5 + 1,
  // so a perfectly overlapped pair takes max(1.5, 1.5) = 1.5; with more comm, the comm bounds.
  SimOptions o = times(1, 2, 1);
  o.f_comm = 0.5;
  o.b_comm = 1.0;
  EXPECT_DOUBLE_EQ(o.pair(), 1.5);
  o.b_comm = 1.8;
  EXPECT_DOUBLE_EQ(o.pair(), 2.3);
  o.f_comm = o.b_comm = 0;
  EXPECT_DOUBLE_EQ(o.pair(), 3.0);
  // The simulated DualPipe step uses the derived pair: one FB chunk is the pair's length.
  o.f_comm = 0.5;
  o.b_comm = 1.0;
  SimResult res = simulate(generate(ScheduleKind::kDualPipe, {4, 8}), o);
  bool seen = false;
  for (const SimEvent& e : res.events)
    if (e.action.kind == OpKind::kForwardBackward) {
      EXPECT_DOUBLE_EQ(e.end - e.start, 1.5);
      seen = true;
    }
  EXPECT_TRUE(seen);
  o.f_comm = 2;  // more than f
  EXPECT_THROW(simulate(generate(ScheduleKind::k1F1B, {2, 2}), o), InvalidArgument);
}

TEST(SimulatorTest, RejectsBadDurations) {
  Schedule s = generate(ScheduleKind::k1F1B, {2, 2});
  EXPECT_THROW(simulate(s, times(1, 1, 2)), InvalidArgument);
  EXPECT_THROW(simulate(s, times(-1, 1, 0)), InvalidArgument);
}

TEST(SimulatorTest, TraceHasOneFlowPerTransfer) {
  Schedule s = generate(ScheduleKind::kDualPipeV, {2, 4});
  SimResult res = simulate(s, times(1, 2, 1));
  nlohmann::json t = chrome_trace(res.events, s.num_ranks(), 1000.0);
  int starts = 0, finishes = 0, compute = 0;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "s") ++starts;
    if (e["ph"] == "f") ++finishes;
    if (e["ph"] == "X" && e["tid"] == 0) ++compute;
  }
  EXPECT_EQ(starts, verify(s).num_transfers);
  EXPECT_EQ(starts, finishes);
  int chunks = 0;
  for (const auto& list : s.ranks)
    for (const Action& a : list) chunks += is_compute(a.kind);
  EXPECT_EQ(compute, chunks);
  const std::string svg = timeline_svg(res.events, s.num_ranks(), s.num_microbatches, "t");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("rank 1"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::pipeline
