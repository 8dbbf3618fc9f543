// Timed simulation (simulator.h) on top of the event engine, and the closed-form bubbles.
#include "switchyard/pipeline/simulator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/verifier.h"

namespace switchyard::pipeline {

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

double closed_form_bubble(const std::string& name, int n, const SimOptions& o, std::string* pre) {
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
