// Per-phase report of measured F&B pairs (fb_overlap_report.h).
#include "switchyard/pipeline/fb_overlap_report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <string>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string step_name(const SubStep& s) {
  return std::string(sub_step_kind_name(s.kind)) + (s.backward ? ".B" : ".F");
}

// Phases of one collective on one rank, seconds.
struct CollPhases {
  double pre, lag, peers, xfer, wake, total;
};

// compute_end: when the overlapped compute ended (0 for serial), after which the wait begins.
CollPhases split(const SubStepEvent& ev, const CommJobTimes& t, double last_join, double compute_end) {
  CollPhases p;
  p.pre = t.posted - ev.start;
  p.lag = t.started - t.posted;
  p.peers = std::max(0.0, last_join - t.started);
  p.xfer = t.finished - std::max(last_join, t.started);
  p.wake = ev.end - std::max(t.finished, compute_end);
  p.total = ev.end - ev.start;
  return p;
}

// Index into events of the collective posted n-th.
std::vector<size_t> collective_events(const FbPairTrace& t) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < t.events.size(); ++i)
    if (t.events[i].collective) idx.push_back(i);
  return idx;
}

void line(std::string& out, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void line(std::string& out, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  out += buf;
  out += '\n';
}

}  // namespace

std::string fb_phase_report(const std::vector<FbPairTrace>& traces, std::vector<FbRankPhases>* totals,
                            FbGroupPhases* group) {
  // pairs[mode][rep][rank]
  std::map<int, std::map<int, const FbPairTrace*>> pairs[2];
  int ranks = 0;
  for (const FbPairTrace& t : traces) {
    SY_REQUIRE(t.events.size() == 8 && t.collectives.size() == 4,
               "fb_phase_report: rank " << t.rank << " rep " << t.rep << " has " << t.events.size()
                                        << " sub-steps and " << t.collectives.size()
                                        << " collectives (one MoE layer has 8 and 4)");
    pairs[t.overlapped][t.rep][t.rank] = &t;
    ranks = std::max(ranks, t.rank + 1);
  }
  SY_REQUIRE(ranks > 0 && !pairs[0].empty() && pairs[0].size() == pairs[1].size(),
             "fb_phase_report: need serial and overlapped pairs of the same reps");
  for (int mode = 0; mode < 2; ++mode)
    for (const auto& [rep, by_rank] : pairs[mode])
      SY_REQUIRE(static_cast<int>(by_rank.size()) == ranks,
                 "fb_phase_report: rep " << rep << " has " << by_rank.size() << " of " << ranks << " ranks");

  // Per (rank, stage/collective index): per-rep samples.
  struct Samples {
    std::vector<double> skew, pre, comp, lag, peers, xfer, wake, exposed, stage;
  };
  std::vector<std::vector<Samples>> ovl(ranks, std::vector<Samples>(4)), ser(ranks, std::vector<Samples>(4));
  std::vector<std::vector<double>> ser_comp_steps(ranks, std::vector<double>(8));
  struct TotalSamples {
    std::vector<double> serial, overlapped, s_comp, s_comm, s_peers, s_xfer, o_comp, exposed, exposed_peers;
  };
  std::vector<TotalSamples> tot(ranks);
  std::vector<std::string> ovl_names(4), ser_names(4);

  std::vector<double> g_ovl, g_bound, g_exposed;
  for (const auto& [rep, by_rank] : pairs[1]) {
    // Stage starts with zero-time collectives: start[r] of stage k+1 = max(start[r] +
    // compute(r, k), the last rank's start of stage k).
    double pair = 0, bound = 0;
    std::vector<double> start(ranks, 0.0);
    for (int k = 0; k < 4; ++k) {
      const double last_post = *std::max_element(start.begin(), start.end());
      for (const auto& [r, t] : by_rank) start[r] = std::max(start[r] + t->events[2 * k].end - t->events[2 * k].start, last_post);
    }
    bound = *std::max_element(start.begin(), start.end());
    for (const auto& [r, t] : by_rank) pair = std::max(pair, t->end - t->begin);
    g_ovl.push_back(pair);
    g_bound.push_back(bound);
    g_exposed.push_back(pair - bound);
    for (int k = 0; k < 4; ++k) {
      double last_join = 0, first_start = 1e300;
      for (const auto& [r, t] : by_rank) {
        last_join = std::max(last_join, t->collectives[k].times.started);
        first_start = std::min(first_start, t->events[2 * k + 1].start);
      }
      for (const auto& [r, t] : by_rank) {
        const SubStepEvent& comp = t->events[2 * k];
        const SubStepEvent& coll = t->events[2 * k + 1];
        const CommJobTimes& ct = t->collectives[k].times;
        CollPhases p = split(coll, ct, last_join, comp.end);
        Samples& s = ovl[r][k];
        s.skew.push_back(coll.start - first_start);
        s.pre.push_back(p.pre);
        s.comp.push_back(comp.end - comp.start);
        s.lag.push_back(p.lag);
        s.peers.push_back(p.peers);
        s.xfer.push_back(p.xfer);
        s.wake.push_back(p.wake);
        s.exposed.push_back(std::max(0.0, coll.end - comp.end));
        s.stage.push_back(coll.end - coll.start);
        ovl_names[k] = step_name(coll.step) + " || " + step_name(comp.step);
      }
    }
    for (const auto& [r, t] : by_rank) {
      double c = 0, e = 0, ep = 0;
      for (int k = 0; k < 4; ++k) {
        const SubStepEvent& comp = t->events[2 * k];
        const SubStepEvent& coll = t->events[2 * k + 1];
        c += comp.end - comp.start;
        const double exposed = std::max(0.0, coll.end - comp.end);
        e += exposed;
        double last_join = 0;
        for (const auto& [r2, t2] : by_rank) last_join = std::max(last_join, t2->collectives[k].times.started);
        ep += std::clamp(last_join - std::max(comp.end, t->collectives[k].times.started), 0.0, exposed);
      }
      tot[r].overlapped.push_back(t->end - t->begin);
      tot[r].o_comp.push_back(c);
      tot[r].exposed.push_back(e);
      tot[r].exposed_peers.push_back(ep);
    }
  }
  for (const auto& [rep, by_rank] : pairs[0]) {
    const auto idx0 = collective_events(*by_rank.begin()->second);
    SY_REQUIRE(idx0.size() == 4, "fb_phase_report: a serial pair has " << idx0.size() << " collectives (want 4)");
    for (int j = 0; j < 4; ++j) {
      double last_join = 0;
      for (const auto& [r, t] : by_rank) last_join = std::max(last_join, t->collectives[j].times.started);
      for (const auto& [r, t] : by_rank) {
        const SubStepEvent& ev = t->events[idx0[j]];
        CollPhases p = split(ev, t->collectives[j].times, last_join, 0);
        Samples& s = ser[r][j];
        s.pre.push_back(p.pre);
        s.lag.push_back(p.lag);
        s.peers.push_back(p.peers);
        s.xfer.push_back(p.xfer);
        s.wake.push_back(p.wake);
        s.stage.push_back(p.total);
        ser_names[j] = step_name(ev.step);
      }
    }
    for (const auto& [r, t] : by_rank) {
      double c = 0, m = 0, pe = 0, x = 0;
      for (size_t i = 0; i < t->events.size(); ++i) {
        const SubStepEvent& ev = t->events[i];
        (ev.collective ? m : c) += ev.end - ev.start;
      }
      for (int j = 0; j < 4; ++j) {
        pe += ser[r][j].peers.back();
        x += ser[r][j].xfer.back();
      }
      tot[r].serial.push_back(t->end - t->begin);
      tot[r].s_comp.push_back(c);
      tot[r].s_comm.push_back(m);
      tot[r].s_peers.push_back(pe);
      tot[r].s_xfer.push_back(x);
    }
  }

  std::string out;
  const double ms = 1e3;
  line(out, "phases: %d ranks, %zu reps, medians in ms", ranks, pairs[0].size());
  line(out, "overlapped stages (collective || compute): skew = stage start - earliest rank's; exposed = stage end - compute end");
  line(out, "%-30s %4s %7s %7s %8s %7s %7s %7s %7s %8s %8s", "stage", "rank", "skew", "post", "compute", "lag", "peers",
       "xfer", "wake", "exposed", "stage");
  for (int k = 0; k < 4; ++k)
    for (int r = 0; r < ranks; ++r) {
      const Samples& s = ovl[r][k];
      line(out, "%-30s %4d %7.3f %7.3f %8.3f %7.3f %7.3f %7.3f %7.3f %8.3f %8.3f",
           (std::to_string(k) + " " + ovl_names[k]).c_str(), r, median(s.skew) * ms, median(s.pre) * ms, median(s.comp) * ms, median(s.lag) * ms, median(s.peers) * ms, median(s.xfer) * ms,
           median(s.wake) * ms, median(s.exposed) * ms, median(s.stage) * ms);
    }
  line(out, "serial collectives (each waited for at once)");
  line(out, "%-30s %4s %7s %7s %7s %7s %7s %8s", "collective", "rank", "post", "lag", "peers", "xfer", "wake", "total");
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < ranks; ++r) {
      const Samples& s = ser[r][j];
      line(out, "%-30s %4d %7.3f %7.3f %7.3f %7.3f %7.3f %8.3f", ser_names[j].c_str(), r, median(s.pre) * ms,
           median(s.lag) * ms,
           median(s.peers) * ms, median(s.xfer) * ms, median(s.wake) * ms, median(s.stage) * ms);
    }
  line(out, "per rank: serial = compute + comm (comm = peers + xfer + lag + wake); overlapped = compute + exposed");
  line(out, "%4s %9s %9s %9s %9s %9s %11s %9s %9s %9s", "rank", "serial", "s.compute", "s.comm", "s.peers", "s.xfer",
       "overlapped", "o.compute", "exposed", "e.peers");
  if (totals) totals->clear();
  for (int r = 0; r < ranks; ++r) {
    const TotalSamples& t = tot[r];
    FbRankPhases p;
    p.rank = r;
    p.serial_s = median(t.serial);
    p.overlapped_s = median(t.overlapped);
    p.serial_compute_s = median(t.s_comp);
    p.serial_comm_s = median(t.s_comm);
    p.serial_peers_s = median(t.s_peers);
    p.serial_xfer_s = median(t.s_xfer);
    p.overlapped_compute_s = median(t.o_comp);
    p.exposed_s = median(t.exposed);
    p.exposed_peers_s = median(t.exposed_peers);
    line(out, "%4d %9.3f %9.3f %9.3f %9.3f %9.3f %11.3f %9.3f %9.3f %9.3f", r, p.serial_s * ms, p.serial_compute_s * ms,
         p.serial_comm_s * ms, p.serial_peers_s * ms, p.serial_xfer_s * ms, p.overlapped_s * ms,
         p.overlapped_compute_s * ms, p.exposed_s * ms, p.exposed_peers_s * ms);
    if (totals) totals->push_back(p);
  }
  FbGroupPhases g;
  g.overlapped_s = median(g_ovl);
  g.compute_bound_s = median(g_bound);
  g.exposed_s = median(g_exposed);
  line(out, "group, overlapped: pair %.3f, compute bound (the same pair with zero-time collectives) %.3f, "
       "exposed beyond it %.3f (medians over reps)", g.overlapped_s * ms, g.compute_bound_s * ms, g.exposed_s * ms);
  if (group) *group = g;
  return out;
}

}  // namespace switchyard::pipeline
