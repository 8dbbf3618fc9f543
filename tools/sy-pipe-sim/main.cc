// sy-pipe-sim: generate, verify and simulate pipeline schedules; print makespan, bubbles,
// activation peak and parameter copies per schedule, optionally draw the timeline (SVG) or
// write a Chrome/Perfetto trace.
//
//   sy-pipe-sim --schedule dualpipe --ranks 8 --microbatches 20 --f 1 --b 2 --w 1 --fb 2.5
//   sy-pipe-sim --schedule all --ranks 4 --microbatches 16 --json
#include <gflags/gflags.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/schedule_format.h"
#include "switchyard/pipeline/simulator.h"
#include "switchyard/pipeline/timeline.h"
#include "switchyard/pipeline/verifier.h"

DEFINE_string(schedule, "all", "1f1b, interleaved-1f1b, zb-h1, zbv, dualpipe, dualpipev, or all");
DEFINE_int32(ranks, 4, "pipeline ranks (devices)");
DEFINE_int32(microbatches, 16, "micro-batches per step (both directions together for dualpipe)");
DEFINE_int32(chunks, 2, "model chunks per rank (interleaved-1f1b)");
DEFINE_double(f, 1.0, "forward chunk time");
DEFINE_double(b, 2.0, "full backward chunk time (input + weight)");
DEFINE_double(w, 1.0, "weight-gradient part of --b");
DEFINE_double(fb, -1.0, "overlapped F&B pair time; negative: max(f-f_comm + b-b_comm, f_comm+b_comm)");
DEFINE_double(f_comm, 0.0, "EP communication inside --f (derives --fb when it is negative)");
DEFINE_double(b_comm, 0.0, "EP communication inside --b (derives --fb when it is negative)");
DEFINE_double(p2p_latency, 0.0, "time per P2P transfer");
DEFINE_double(reduce_time, 0.0, "time of one mirrored-gradient reduction (dualpipe)");
DEFINE_int32(moe_layers, 0,
             "> 0: time MoE sub-steps, this many MoE layers per stage; chunk times then come from the sub-step "
             "flags below on a compute and an EP-communication stream, and --f --b --w --fb --f_comm --b_comm are ignored");
DEFINE_double(attn_f, 0.0, "per layer: attention forward (compute)");
DEFINE_double(dispatch_f, 0.0, "per layer: dispatch forward (EP communication)");
DEFINE_double(experts_f, 0.0, "per layer: experts forward (compute)");
DEFINE_double(combine_f, 0.0, "per layer: combine forward (EP communication)");
DEFINE_double(combine_b, 0.0, "per layer: backward of combine (a dispatch of the gradient; EP communication)");
DEFINE_double(experts_b, 0.0, "per layer: experts input gradient (compute)");
DEFINE_double(dispatch_b, 0.0, "per layer: backward of dispatch (a combine; EP communication)");
DEFINE_double(attn_b, 0.0, "per layer: attention input gradient (compute)");
DEFINE_double(experts_w, 0.0, "per layer: experts weight gradient (compute)");
DEFINE_double(attn_w, 0.0, "per layer: attention weight gradient (compute)");
DEFINE_string(zbv_order, "greedy",
              "zbv: greedy (our unit-time list schedule) or zero-bubble (the zero-bubble repository's V "
              "heuristic, built for costs F = --f, B = --b - --w, W = --w, C = --p2p_latency)");
DEFINE_bool(json, false, "print JSON instead of the table");
DEFINE_string(svg, "", "write the timeline picture of the (single) schedule to this file");
DEFINE_string(trace, "", "write a Chrome/Perfetto trace of the (single) schedule to this file");
DEFINE_bool(print_schedule, false, "print the schedule in its text form");

using namespace switchyard::pipeline;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) SY_THROW(IoError, "sy-pipe-sim: cannot write " << path);
  out << text;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("simulate pipeline schedules; see docs/pipeline.md");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    SimOptions opt;
    opt.f = FLAGS_f;
    opt.b = FLAGS_b;
    opt.w = FLAGS_w;
    opt.fb = FLAGS_fb < 0 ? std::nan("") : FLAGS_fb;
    opt.f_comm = FLAGS_f_comm;
    opt.b_comm = FLAGS_b_comm;
    opt.p2p_latency = FLAGS_p2p_latency;
    opt.reduce_time = FLAGS_reduce_time;
    if (FLAGS_moe_layers > 0) {
      MoeTimes t;
      t.layers = FLAGS_moe_layers;
      t.attn_f = FLAGS_attn_f;
      t.dispatch_f = FLAGS_dispatch_f;
      t.experts_f = FLAGS_experts_f;
      t.combine_f = FLAGS_combine_f;
      t.combine_b = FLAGS_combine_b;
      t.experts_b = FLAGS_experts_b;
      t.dispatch_b = FLAGS_dispatch_b;
      t.attn_b = FLAGS_attn_b;
      t.experts_w = FLAGS_experts_w;
      t.attn_w = FLAGS_attn_w;
      opt.moe = t;
      const double fb = opt.chunk_duration(make_fb(1, 0, 0, 0));
      if (!FLAGS_json)
        std::printf("MoE sub-steps, %d layers per stage: F %.3f  B(full) %.3f  W %.3f  F&B %.3f (F+B %.3f)\n",
                    t.layers, t.f(), t.b(), t.w(), fb, t.f() + t.b());
    }
    std::vector<ScheduleKind> kinds;
    if (FLAGS_schedule == "all")
      kinds = all_schedule_kinds();
    else
      kinds = {parse_schedule_kind(FLAGS_schedule)};
    SY_REQUIRE(kinds.size() == 1 || (FLAGS_svg.empty() && FLAGS_trace.empty()),
               "--svg and --trace need a single --schedule");
    GeneratorOptions g;
    g.num_ranks = FLAGS_ranks;
    g.num_microbatches = FLAGS_microbatches;
    g.num_chunks = FLAGS_chunks;
    SY_REQUIRE(FLAGS_zbv_order == "greedy" || FLAGS_zbv_order == "zero-bubble",
               "--zbv_order = '" << FLAGS_zbv_order << "': valid are greedy, zero-bubble");
    if (FLAGS_zbv_order == "zero-bubble") {
      g.zbv_order = ZbvOrder::kZeroBubbleHeuristic;
      g.zbv_costs = {opt.moe ? opt.moe->f() : FLAGS_f, opt.moe ? opt.moe->b() - opt.moe->w() : FLAGS_b - FLAGS_w,
                     opt.moe ? opt.moe->w() : FLAGS_w, FLAGS_p2p_latency};
    }
    nlohmann::json out = nlohmann::json::array();
    if (!FLAGS_json)
      std::printf("%-17s %5s %5s %10s %10s %10s %11s %8s %7s %11s\n", "schedule", "ranks", "mb", "makespan",
                  "bubble_max", "bubble_min", "closed_form", "peak_act", "copies", "stages/rank");
    for (ScheduleKind k : kinds) {
      const char* name = schedule_kind_name(k);
      if (!is_valid(k, g)) {
        if (kinds.size() == 1) generate(k, g);  // throws the explanation
        if (FLAGS_json)
          out.push_back({{"schedule", name}, {"skipped", valid_sizes(k)}});
        else
          std::printf("%-17s skipped: valid sizes are %s\n", name, valid_sizes(k).c_str());
        continue;
      }
      Schedule s = generate(k, g);
      verify(s);
      SimResult res = simulate(s, opt);
      std::string pre;
      const double closed = closed_form_bubble(name, FLAGS_ranks, opt, &pre);
      double bmin = res.bubble.empty() ? 0 : res.bubble[0];
      int peak = 0;
      for (double b : res.bubble) bmin = std::min(bmin, b);
      for (int p : res.peak_activations) peak = std::max(peak, p);
      if (FLAGS_print_schedule) std::cout << to_text(s);
      if (FLAGS_json) {
        nlohmann::json moe;
        if (opt.moe)
          moe = {{"layers", opt.moe->layers}, {"f", opt.moe->f()}, {"b", opt.moe->b()}, {"w", opt.moe->w()},
                 {"fb", opt.chunk_duration(make_fb(1, 0, 0, 0))}};
        out.push_back({{"schedule", name},
                       {"moe", moe},
                       {"ranks", FLAGS_ranks},
                       {"microbatches", FLAGS_microbatches},
                       {"makespan", res.makespan},
                       {"bubble", res.bubble},
                       {"busy", res.busy},
                       {"closed_form_bubble", std::isnan(closed) ? nlohmann::json() : nlohmann::json(closed)},
                       {"closed_form_precondition", pre},
                       {"peak_activations", res.peak_activations},
                       {"parameter_copies", res.parameter_copies},
                       {"stages_per_rank", res.stages_per_rank[0]}});
      } else {
        std::printf("%-17s %5d %5d %10.3f %10.3f %10.3f %11s %8d %7d %11d\n", name, FLAGS_ranks,
                    FLAGS_microbatches, res.makespan, res.max_bubble(), bmin,
                    std::isnan(closed) ? "-" : std::to_string(closed).substr(0, 10).c_str(), peak,
                    res.parameter_copies, res.stages_per_rank[0]);
      }
      if (!FLAGS_svg.empty())
        write_file(FLAGS_svg, timeline_svg(res.events, s.num_ranks(), s.num_microbatches,
                                           std::string(name) + ": " + std::to_string(FLAGS_ranks) + " ranks, " +
                                               std::to_string(FLAGS_microbatches) + " micro-batches"));
      if (!FLAGS_trace.empty()) write_file(FLAGS_trace, chrome_trace(res.events, s.num_ranks(), 1000.0).dump(1));
    }
    if (FLAGS_json) std::cout << out.dump(2) << "\n";
  } catch (const switchyard::Error& e) {
    std::fprintf(stderr, "sy-pipe-sim: %s\n", e.message().c_str());
    return 2;
  }
  return 0;
}
