// SVG timeline and Chrome/Perfetto trace writers.
#include "switchyard/pipeline/timeline.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

namespace switchyard::pipeline {

namespace {

// Hue per op kind; lightness alternates with the micro-batch so neighbours stay distinct.
std::string colour(OpKind kind, int mb, int num_mb) {
  int hue = 210;
  switch (kind) {
    case OpKind::kForward: hue = 210; break;         // blue
    case OpKind::kBackwardInput: hue = 30; break;    // orange
    case OpKind::kBackwardWeight: hue = 120; break;  // green
    case OpKind::kBackward: hue = 280; break;        // purple
    default: hue = 0; break;
  }
  const int light = 45 + (num_mb > 0 ? (mb * 30) / std::max(1, num_mb) : 0);
  std::ostringstream os;
  os << "hsl(" << hue << ",70%," << light << "%)";
  return os.str();
}

}  // namespace

std::string timeline_svg(const std::vector<SimEvent>& events, int num_ranks, int num_mb, const std::string& title) {
  double end = 0;
  for (const auto& e : events) end = std::max(end, e.end);
  const double width = 1400, left = 60, row = 40, top = 30;
  const double scale = end > 0 ? (width - left - 10) / end : 1.0;
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\""
     << top + row * num_ranks + 40 << "\" font-family=\"sans-serif\" font-size=\"10\">\n";
  os << "<text x=\"4\" y=\"16\" font-size=\"13\">" << title << "</text>\n";
  for (int r = 0; r < num_ranks; ++r)
    os << "<text x=\"4\" y=\"" << top + row * r + 18 << "\">rank " << r << "</text>\n";
  auto box = [&](double x0, double x1, double y, double h, const std::string& fill, const std::string& label) {
    os << "<rect x=\"" << left + x0 * scale << "\" y=\"" << y << "\" width=\"" << std::max(0.5, (x1 - x0) * scale)
       << "\" height=\"" << h << "\" fill=\"" << fill << "\" stroke=\"white\" stroke-width=\"0.5\"/>\n";
    if (!label.empty() && (x1 - x0) * scale > 10)
      os << "<text x=\"" << left + (x0 + x1) / 2 * scale << "\" y=\"" << y + h / 2 + 3
         << "\" text-anchor=\"middle\" fill=\"white\">" << label << "</text>\n";
  };
  for (const auto& e : events) {
    const double y = top + row * e.rank;
    const Action& a = e.action;
    if (!a.sub_steps.empty()) continue;  // MoE sub-steps: traces only
    if (e.comm) {
      box(e.start, e.end, y + 30, 5, is_send(a.kind) ? "#999" : (is_recv(a.kind) ? "#555" : "#c33"), "");
      continue;
    }
    if (a.kind == OpKind::kForwardBackward) {  // F half on top, backward half below
      box(e.start, e.end, y, 14, colour(OpKind::kForward, a.microbatch, num_mb), std::to_string(a.microbatch));
      box(e.start, e.end, y + 14, 14, colour(OpKind::kBackward, a.bwd_microbatch, num_mb),
          std::to_string(a.bwd_microbatch));
    } else {
      box(e.start, e.end, y, 28, colour(a.kind, a.microbatch, num_mb), std::to_string(a.microbatch));
    }
  }
  const double ly = top + row * num_ranks + 15;
  double lx = left;
  for (auto [kind, name] : {std::pair{OpKind::kForward, "F"}, {OpKind::kBackwardInput, "B (input)"},
                            {OpKind::kBackwardWeight, "W"}, {OpKind::kBackward, "BW (full backward)"}}) {
    os << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"12\" height=\"12\" fill=\"" << colour(kind, 0, 1)
       << "\"/><text x=\"" << lx + 16 << "\" y=\"" << ly + 10 << "\">" << name << "</text>\n";
    lx += 140;
  }
  os << "<text x=\"" << lx << "\" y=\"" << ly + 10 << "\">FB = F over BW in one box; grey lane = P2P</text>\n";
  os << "</svg>\n";
  return os.str();
}

nlohmann::json chrome_trace(const std::vector<SimEvent>& events, int num_ranks, double us_per_unit) {
  nlohmann::json ev = nlohmann::json::array();
  for (int r = 0; r < num_ranks; ++r) {
    ev.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", r}, {"args", {{"name", "rank " + std::to_string(r)}}}});
    ev.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", r}, {"tid", 0}, {"args", {{"name", "compute"}}}});
    ev.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", r}, {"tid", 1}, {"args", {{"name", "comm"}}}});
    ev.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", r}, {"tid", 2}, {"args", {{"name", "ep comm"}}}});
  }
  for (const auto& e : events) {
    const double ts = e.start * us_per_unit, dur = (e.end - e.start) * us_per_unit;
    if (!e.action.sub_steps.empty()) {  // a MoE sub-step: inside its chunk, or on the EP lane
      const SubStep& x = e.action.sub_steps[0];
      ev.push_back({{"ph", "X"},
                    {"name", std::string(sub_step_kind_name(x.kind)) + (x.backward ? ".B" : ".F") + " s" +
                                 std::to_string(x.stage) + " m" + std::to_string(x.microbatch)},
                    {"cat", "moe"},
                    {"pid", e.rank},
                    {"tid", e.comm ? 2 : 0},
                    {"ts", ts},
                    {"dur", dur}});
      continue;
    }
    ev.push_back({{"ph", "X"},
                  {"name", to_string(e.action)},
                  {"cat", op_kind_name(e.action.kind)},
                  {"pid", e.rank},
                  {"tid", e.comm ? 1 : 0},
                  {"ts", ts},
                  {"dur", dur},
                  {"args", {{"stage", e.action.stage}, {"mb", e.action.microbatch}}}});
    if (e.flow_id >= 0 && is_p2p(e.action.kind)) {
      const bool send = is_send(e.action.kind);
      nlohmann::json f = {{"ph", send ? "s" : "f"}, {"name", "p2p"},   {"cat", "p2p"},    {"id", e.flow_id},
                          {"pid", e.rank},          {"tid", 1},        {"ts", send ? ts : ts + dur}};
      if (!send) f["bp"] = "e";
      ev.push_back(f);
    }
  }
  return {{"traceEvents", ev}, {"displayTimeUnit", "ms"}};
}

}  // namespace switchyard::pipeline
