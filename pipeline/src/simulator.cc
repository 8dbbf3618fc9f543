// Timed simulation (simulator.h) on top of the event engine, and the closed-form bubbles.
#include "switchyard/pipeline/simulator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <numeric>

#include "engine.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/verifier.h"

namespace switchyard::pipeline {

double MoeTimes::f() const { return layers * (attn_f + dispatch_f + experts_f + combine_f); }
double MoeTimes::w() const { return layers * (experts_w + attn_w); }
double MoeTimes::b() const { return layers * (combine_b + experts_b + dispatch_b + attn_b) + w(); }

namespace {

double sub_step_duration(const SubStep& x, const MoeTimes& t, bool full_backward) {
  if (!x.backward) {
    switch (x.kind) {
      case SubStepKind::kAttention: return t.attn_f;
      case SubStepKind::kDispatch: return t.dispatch_f;
      case SubStepKind::kExperts: return t.experts_f;
      case SubStepKind::kCombine: return t.combine_f;
    }
  }
  switch (x.kind) {
    case SubStepKind::kAttention: return t.attn_b + (full_backward ? t.attn_w : 0.0);
    case SubStepKind::kDispatch: return t.dispatch_b;
    case SubStepKind::kExperts: return t.experts_b + (full_backward ? t.experts_w : 0.0);
    case SubStepKind::kCombine: return t.combine_b;
  }
  return 0.0;
}

void check_moe_times(const MoeTimes& t) {
  bool ok = t.layers >= 1;
  for (double v : {t.attn_f, t.dispatch_f, t.experts_f, t.combine_f, t.combine_b, t.experts_b, t.dispatch_b, t.attn_b,
                   t.experts_w, t.attn_w})
    ok = ok && v >= 0;
  SY_REQUIRE(ok, "simulate: MoE sub-step times need layers >= 1 (got " << t.layers
                                                                       << ") and every duration >= 0");
}

}  // namespace

std::vector<TimedSubStep> sub_step_timeline(const Action& a, const MoeTimes& t) {
  SY_REQUIRE(is_compute(a.kind), "sub_step_timeline: " << to_string(a) << " is not a compute chunk");
  std::vector<TimedSubStep> out;
  if (a.kind == OpKind::kBackwardWeight) return out;  // one compute block, no sub-steps
  const std::vector<SubStep> steps = a.sub_steps.empty() ? moe_sub_steps(a, t.layers) : a.sub_steps;
  const bool full_backward = a.kind == OpKind::kBackward || a.kind == OpKind::kForwardBackward;
  double stream_free[2] = {0.0, 0.0};          // compute, EP communication
  std::map<std::tuple<bool, int, int>, double> chain_end;  // (backward, stage, mb) -> last end
  for (const SubStep& x : steps) {
    const bool coll = is_collective(x);
    double& prev = chain_end[{x.backward, x.stage, x.microbatch}];
    TimedSubStep ts;
    ts.step = x;
    ts.collective = coll;
    ts.start = std::max(stream_free[coll ? 1 : 0], prev);
    ts.end = ts.start + sub_step_duration(x, t, full_backward);
    stream_free[coll ? 1 : 0] = ts.end;
    prev = ts.end;
    out.push_back(ts);
  }
  return out;
}

double SimOptions::chunk_duration(const Action& a) const {
  if (!moe) return duration(a.kind);
  if (a.kind == OpKind::kBackwardWeight) return moe->w();
  double end = 0.0;
  for (const TimedSubStep& x : sub_step_timeline(a, *moe)) end = std::max(end, x.end);
  return end;
}

double SimOptions::duration(OpKind kind) const {
  switch (kind) {
    case OpKind::kForward: return f;
    case OpKind::kBackwardInput: return b - w;
    case OpKind::kBackwardWeight: return w;
    case OpKind::kBackward: return b;
    case OpKind::kForwardBackward: return pair();
    default: return 0.0;
  }
}

double SimOptions::pair() const {
  if (!std::isnan(fb)) return fb;
  return std::max(f - f_comm + b - b_comm, f_comm + b_comm);
}

double SimResult::max_bubble() const {
  return bubble.empty() ? 0.0 : *std::max_element(bubble.begin(), bubble.end());
}

double SimResult::mean_bubble() const {
  return bubble.empty() ? 0.0 : std::accumulate(bubble.begin(), bubble.end(), 0.0) / bubble.size();
}

SimResult simulate(const Schedule& s, const SimOptions& opt) {
  SY_REQUIRE(opt.f >= 0 && opt.b >= 0 && opt.w >= 0 && opt.w <= opt.b,
             "simulate: durations f = " << opt.f << ", b = " << opt.b << ", w = " << opt.w
                                        << " must be >= 0 with w <= b (b is the full backward)");
  SY_REQUIRE(std::isnan(opt.fb) || opt.fb >= 0, "simulate: fb = " << opt.fb << " must be >= 0");
  SY_REQUIRE(opt.f_comm >= 0 && opt.f_comm <= opt.f && opt.b_comm >= 0 && opt.b_comm <= opt.b,
             "simulate: f_comm = " << opt.f_comm << " and b_comm = " << opt.b_comm
                                   << " must lie in [0, f] and [0, b] (they are parts of f and b)");
  SY_REQUIRE(opt.p2p_latency >= 0 && opt.reduce_time >= 0,
             "simulate: p2p_latency = " << opt.p2p_latency << " and reduce_time = " << opt.reduce_time
                                        << " must be >= 0");
  if (opt.moe) check_moe_times(*opt.moe);
  verify_static(s);
  detail::EngineOptions eo;
  eo.durations = opt;
  eo.strict_order = false;
  eo.record_events = true;
  detail::EngineResult run = detail::run_engine(s, eo);
  SimResult res;
  res.makespan = run.makespan;
  res.busy = run.busy;
  for (double b : res.busy) res.bubble.push_back(res.makespan - b);
  res.peak_activations = peak_activations(s);
  res.parameter_copies = s.parameter_copies();
  for (int r = 0; r < s.num_ranks(); ++r) res.stages_per_rank.push_back(static_cast<int>(s.stages_on(s.pp_rank(r)).size()));
  res.events = std::move(run.events);
  return res;
}

double closed_form_bubble(const std::string& name, int n, const SimOptions& opt, std::string* pre) {
  SimOptions o = opt;
  if (opt.moe) {  // the chunk times the sub-steps give
    o.f = opt.moe->f();
    o.b = opt.moe->b();
    o.w = opt.moe->w();
    o.fb = opt.chunk_duration(make_fb(1, 0, 0, 0));
  }
  const double fb = o.pair();
  auto set = [&](const char* text) {
    if (pre) *pre = text;
  };
  if (name == "1f1b") {
    set("micro-batches >= ranks, zero P2P latency");
    return (n - 1) * (o.f + o.b);
  }
  if (name == "interleaved-1f1b") {
    set("micro-batches a multiple of ranks, F and B per model chunk, zero P2P latency");
    return (n - 1) * (o.f + o.b);
  }
  if (name == "zb-h1") {
    set("micro-batches >= ranks, W <= F, zero P2P latency");
    return (n - 1) * (o.f + o.b - 2 * o.w);
  }
  if (name == "dualpipe") {
    set("PP = ranks, micro-batches >= 2 * ranks, zero P2P latency");
    return (n / 2.0 - 1) * (fb + o.b - 3 * o.w);
  }
  if (name == "dualpipev") {
    set("PP = 2 * ranks stages, micro-batches >= 2 * ranks, zero P2P latency");
    return (n - 1) * (fb + o.b - 3 * o.w);
  }
  set("no closed form");
  return std::nan("");
}

}  // namespace switchyard::pipeline
