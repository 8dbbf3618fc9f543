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

TEST(SimulatorTest, ZeroBubbleZbvReachesTheFillLowerBoundOnTheWholeGrid) {
  // The zero-bubble repository's ZBV heuristic, built for the simulated costs, reaches the
  // fill lower bound (N-1)F when B-W = F (also at M = 2N+2, where the greedy order pays a
  // partial last wave); with B-W > F it pays (N-1)(B-W) here. Otherwise (B-W < F) it lies
  // between the bound and the greedy order. It never loses to the greedy order and keeps the
  // 1F1B activation peak (2N chunks = N micro-batches of a whole model slice).
  for (int p : {2, 4, 8})
    for (int m : {2 * p, 2 * p + 2, 4 * p})
      for (SimOptions o : {times(1, 2, 1), times(2, 4, 2), times(1, 1.5, 0.5), times(1, 1.25, 0.5), times(1, 3, 1)}) {
        GeneratorOptions g{p, m};
        g.zbv_order = ZbvOrder::kZeroBubbleHeuristic;
        g.zbv_costs = {o.f, o.b - o.w, o.w, 0.0};
        Schedule s = generate(ScheduleKind::kZBV, g);
        verify(s);
        SimResult res = simulate(s, o);
        if (o.b - o.w >= o.f) {
          EXPECT_DOUBLE_EQ(res.max_bubble(), (p - 1) * (o.b - o.w)) << "p " << p << " m " << m << " F " << o.f
                                                                     << " B " << o.b;
        }
        EXPECT_GE(res.max_bubble(), (p - 1) * o.f);
        EXPECT_LE(res.max_bubble(), simulate(generate(ScheduleKind::kZBV, {p, m}), o).max_bubble());
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


// ---- MoE sub-steps: chunk times from a compute stream and an EP communication stream ----

// Distinct per-layer times, so every hand-computed instant below identifies its sub-step.
MoeTimes distinct_moe_times(int layers) {
  MoeTimes t;
  t.layers = layers;
  t.attn_f = 1, t.dispatch_f = 2, t.experts_f = 3, t.combine_f = 4;
  t.combine_b = 5, t.experts_b = 6, t.dispatch_b = 7, t.attn_b = 8;
  t.experts_w = 0.5, t.attn_w = 0.25;
  return t;
}

struct Expected {
  SubStepKind kind;
  bool backward;
  int layer;
  bool collective;
  double start, end;
};

void expect_timeline(const std::vector<TimedSubStep>& got, const std::vector<Expected>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("sub-step " + std::to_string(i));
    EXPECT_EQ(got[i].step.kind, want[i].kind);
    EXPECT_EQ(got[i].step.backward, want[i].backward);
    EXPECT_EQ(got[i].step.layer, want[i].layer);
    EXPECT_EQ(got[i].collective, want[i].collective);
    EXPECT_DOUBLE_EQ(got[i].start, want[i].start);
    EXPECT_DOUBLE_EQ(got[i].end, want[i].end);
  }
}

TEST(SubStepTimelineTest, LoneForwardWaitsForItsOwnCollectives) {
  using K = SubStepKind;
  // ATTN 1, DISPATCH 2, EXPERTS 3, COMBINE 4 back to back, twice (2 layers).
  expect_timeline(sub_step_timeline(make_compute(OpKind::kForward, 0, 0), distinct_moe_times(2)),
                  {{K::kAttention, false, 0, false, 0, 1},
                   {K::kDispatch, false, 0, true, 1, 3},
                   {K::kExperts, false, 0, false, 3, 6},
                   {K::kCombine, false, 0, true, 6, 10},
                   {K::kAttention, false, 1, false, 10, 11},
                   {K::kDispatch, false, 1, true, 11, 13},
                   {K::kExperts, false, 1, false, 13, 16},
                   {K::kCombine, false, 1, true, 16, 20}});
}

TEST(SubStepTimelineTest, FullBackwardRunsEachWeightPartAfterItsInputPart) {
  using K = SubStepKind;
  // COMBINE.B 5, EXPERTS.B 6 + 0.5, DISPATCH.B 7, ATTN.B 8 + 0.25 (layer 0 only).
  expect_timeline(sub_step_timeline(make_compute(OpKind::kBackward, 0, 0), distinct_moe_times(1)),
                  {{K::kCombine, true, 0, true, 0, 5},
                   {K::kExperts, true, 0, false, 5, 11.5},
                   {K::kDispatch, true, 0, true, 11.5, 18.5},
                   {K::kAttention, true, 0, false, 18.5, 26.75}});
  SimOptions o;
  o.moe = distinct_moe_times(3);
  EXPECT_DOUBLE_EQ(o.chunk_duration(make_compute(OpKind::kBackward, 0, 0)), 3 * 26.75);
  EXPECT_DOUBLE_EQ(o.chunk_duration(make_compute(OpKind::kBackwardInput, 0, 0)), 3 * 26.0);  // no W parts
  EXPECT_DOUBLE_EQ(o.chunk_duration(make_compute(OpKind::kBackwardWeight, 0, 0)), 3 * 0.75);
  EXPECT_DOUBLE_EQ(o.chunk_duration(make_compute(OpKind::kForward, 0, 0)), 3 * 10.0);
}

TEST(SubStepTimelineTest, PairHidesEachCollectiveBehindTheOtherMicrobatchsCompute) {
  using K = SubStepKind;
  // Figure-4 order, forward micro-batch 3 (stage 1) with backward micro-batch 0 (stage 0):
  //   COMBINE.B [0,5] comm        ATTN.F [0,1] compute
  //   DISPATCH.F [5,7] (comm busy until 5)   EXPERTS.B+W [5,11.5] (needs COMBINE.B)
  //   DISPATCH.B [11.5,18.5] (needs EXPERTS.B)  EXPERTS.F [11.5,14.5] (compute busy)
  //   COMBINE.F [18.5,22.5] (comm busy)     ATTN.B+W [18.5,26.75] (needs DISPATCH.B)
  // = max(5,1) + max(2,6.5) + max(7,3) + max(4,8.25) = 26.75, against F + BW = 10 + 26.75.
  const Action fb = make_fb(1, 3, 0, 0);
  const auto got = sub_step_timeline(fb, distinct_moe_times(1));
  expect_timeline(got, {{K::kCombine, true, 0, true, 0, 5},
                        {K::kAttention, false, 0, false, 0, 1},
                        {K::kDispatch, false, 0, true, 5, 7},
                        {K::kExperts, true, 0, false, 5, 11.5},
                        {K::kDispatch, true, 0, true, 11.5, 18.5},
                        {K::kExperts, false, 0, false, 11.5, 14.5},
                        {K::kCombine, false, 0, true, 18.5, 22.5},
                        {K::kAttention, true, 0, false, 18.5, 26.75}});
  EXPECT_EQ(got[1].step.microbatch, 3);
  EXPECT_EQ(got[0].step.microbatch, 0);
  // Two layers: the second layer pair starts when the first has ended (each chain's next
  // sub-step needs the previous layer's last one), so the pair takes twice as long.
  SimOptions o;
  o.moe = distinct_moe_times(2);
  EXPECT_DOUBLE_EQ(o.chunk_duration(fb), 2 * 26.75);
  // Sub-steps carried by the action (add_moe_sub_steps) give the same timeline.
  Action with = fb;
  with.sub_steps = moe_sub_steps(fb, 2);
  EXPECT_DOUBLE_EQ(o.chunk_duration(with), 2 * 26.75);
}

TEST(SimulatorTest, MoeSubStepsTimeEveryChunkOfASchedule) {
  // Every chunk takes its timeline's length: the same makespan as the chunk-DAG longest path
  // with the hand-computed F = 2*10, B = 2*26.75, W = 2*0.75, F&B = 2*26.75; sub-step events
  // sit inside their chunk at the hand-computed offsets; overlap shortens the step against
  // F&B = F + B.
  const MoeTimes t = distinct_moe_times(2);
  for (ScheduleKind k : {ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV, ScheduleKind::kZBH1}) {
    Schedule s = generate(k, {4, 8});
    SimOptions o;
    o.moe = t;
    SimResult res = simulate(s, o);
    const SimOptions scalar = times(20, 53.5, 1.5, 53.5);
    EXPECT_DOUBLE_EQ(res.makespan, naive_makespan(s, scalar)) << schedule_kind_name(k);
    Schedule with = s;
    add_moe_sub_steps(with, 2);
    EXPECT_DOUBLE_EQ(simulate(with, o).makespan, res.makespan) << schedule_kind_name(k);
    int pairs = 0;
    for (size_t i = 0; i < res.events.size(); ++i) {
      const SimEvent& e = res.events[i];
      if (e.comm || !e.action.sub_steps.empty() || e.action.kind != OpKind::kForwardBackward) continue;
      ++pairs;
      ASSERT_LE(i + 16, res.events.size());
      EXPECT_DOUBLE_EQ(e.end - e.start, 53.5);
      // Layer 0 pair: DISPATCH.F of the forward micro-batch at [5, 7] after the chunk start.
      const SimEvent& d = res.events[i + 3];
      ASSERT_EQ(d.action.sub_steps.size(), 1u);
      EXPECT_EQ(d.action.sub_steps[0].kind, SubStepKind::kDispatch);
      EXPECT_TRUE(d.comm);
      EXPECT_EQ(d.action.microbatch, e.action.microbatch);
      EXPECT_DOUBLE_EQ(d.start - e.start, 5);
      EXPECT_DOUBLE_EQ(d.end - e.start, 7);
    }
    EXPECT_EQ(pairs > 0, k != ScheduleKind::kZBH1) << schedule_kind_name(k);
    if (pairs > 0) {
      const SimOptions no_overlap = times(20, 53.5, 1.5, 20 + 53.5);
      EXPECT_LT(res.makespan, naive_makespan(s, no_overlap)) << schedule_kind_name(k);
    }
  }
}

TEST(SimulatorTest, ClosedFormUsesTheSubStepChunkTimes) {
  SimOptions o;
  o.moe = distinct_moe_times(1);
  // DualPipe, 4 ranks: (PP/2-1)(F&B + B - 3W) with F&B = 26.75, B = 26.75, W = 0.75.
  EXPECT_DOUBLE_EQ(closed_form_bubble("dualpipe", 4, o), 1 * (26.75 + 26.75 - 3 * 0.75));
}

TEST(SimulatorTest, RejectsNegativeSubStepTimes) {
  SimOptions o;
  o.moe = distinct_moe_times(1);
  o.moe->dispatch_b = -1;
  EXPECT_THROW(simulate(generate(ScheduleKind::k1F1B, {2, 2}), o), InvalidArgument);
  o.moe = distinct_moe_times(0);
  EXPECT_THROW(simulate(generate(ScheduleKind::k1F1B, {2, 2}), o), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::pipeline
