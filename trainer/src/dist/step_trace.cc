// StepTrace (header): event recording, gather to rank 0, trace/SVG files, breakdown.
#include "switchyard/trainer/dist/step_trace.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/timeline.h"

namespace switchyard::trainer::dist {
namespace {

// comm, start, end, op, stage, microbatch, sub-step kind (-1 none), backward, layer, sub-step microbatch
constexpr int kFields = 10;

void pack(const pipeline::SimEvent& e, double* f) {
  const bool sub = !e.action.sub_steps.empty();
  f[0] = e.comm;
  f[1] = e.start;
  f[2] = e.end;
  f[3] = static_cast<double>(e.action.kind);
  f[4] = e.action.stage;
  f[5] = e.action.microbatch;
  f[6] = sub ? static_cast<double>(e.action.sub_steps[0].kind) : -1;
  f[7] = sub ? e.action.sub_steps[0].backward : 0;
  f[8] = sub ? e.action.sub_steps[0].layer : 0;
  f[9] = sub ? e.action.sub_steps[0].microbatch : 0;
}

pipeline::SimEvent unpack(int rank, const double* f) {
  pipeline::SimEvent e;
  e.rank = rank;
  e.comm = f[0] != 0;
  e.start = f[1];
  e.end = f[2];
  e.action.kind = static_cast<pipeline::OpKind>(static_cast<int>(f[3]));
  e.action.stage = static_cast<int>(f[4]);
  e.action.microbatch = static_cast<int>(f[5]);
  if (f[6] >= 0) {
    pipeline::SubStep s;
    s.kind = static_cast<pipeline::SubStepKind>(static_cast<int>(f[6]));
    s.backward = f[7] != 0;
    s.layer = static_cast<int>(f[8]);
    s.microbatch = static_cast<int>(f[9]);
    e.action.sub_steps.push_back(s);
  }
  return e;
}

double sum_over(comm::Communicator& c, double x) {
  double out = x;
  if (c.size() > 1) c.all_reduce(&x, &out, 1, comm::DataType::kFloat64, comm::ReduceOp::kSum);
  return out;
}

}  // namespace

StepTrace::StepTrace(std::shared_ptr<comm::Communicator> world) : world_(std::move(world)) {
  int64_t origin = std::chrono::steady_clock::now().time_since_epoch().count();
  if (world_->size() > 1) world_->broadcast(&origin, 1, comm::DataType::kInt64, 0);
  origin_ = std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(origin));
}

double StepTrace::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin_).count();
}

void StepTrace::push(pipeline::SimEvent e, bool async) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
  async_.push_back(async);
}

void StepTrace::record_compute(pipeline::OpKind kind, int step, double start, double end) {
  if (!enabled_) return;
  pipeline::SimEvent e;
  e.rank = world_->rank();
  e.start = start;
  e.end = end;
  e.action = pipeline::make_compute(kind, 0, step);
  push(std::move(e), false);
}

void StepTrace::record_segment(const pipeline::SubStep& s, int step, double start, double end) {
  if (!enabled_) return;
  pipeline::SimEvent e;
  e.rank = world_->rank();
  e.start = start;
  e.end = end;
  e.action = pipeline::make_compute(s.backward ? pipeline::OpKind::kBackward : pipeline::OpKind::kForward, 0, step);
  e.action.sub_steps.push_back(s);
  push(std::move(e), false);
}

void StepTrace::record_comm(pipeline::SubStepKind kind, bool backward, int layer, int step, double start,
                            double end, int microbatch, bool async) {
  if (!enabled_) return;
  pipeline::SimEvent e;
  e.rank = world_->rank();
  e.comm = true;
  e.start = start;
  e.end = end;
  e.action = pipeline::make_compute(backward ? pipeline::OpKind::kBackwardInput : pipeline::OpKind::kForward, 0, step);
  pipeline::SubStep s;
  s.kind = kind;
  s.backward = backward;
  s.layer = layer;
  s.microbatch = microbatch >= 0 ? microbatch : step;
  e.action.sub_steps.push_back(s);
  push(std::move(e), async);
}

void StepTrace::record_reduce(int step, double start, double end) {
  if (!enabled_) return;
  pipeline::SimEvent e;
  e.rank = world_->rank();
  e.comm = true;
  e.start = start;
  e.end = end;
  e.action = pipeline::make_reduce(0);
  e.action.microbatch = step;
  push(std::move(e), false);
}

std::vector<pipeline::SimEvent> StepTrace::gather() const {
  const int n = world_->size();
  int64_t mine = static_cast<int64_t>(events_.size());
  std::vector<int64_t> counts(n, mine);
  if (n > 1) world_->all_gather(&mine, counts.data(), 1, comm::DataType::kInt64);
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  std::vector<double> send(most * kFields, 0.0), recv(most * kFields * n, 0.0);
  for (size_t i = 0; i < events_.size(); ++i) pack(events_[i], send.data() + i * kFields);
  if (n > 1)
    world_->all_gather(send.data(), recv.data(), send.size(), comm::DataType::kFloat64);
  else
    recv = send;
  std::vector<pipeline::SimEvent> out;
  if (world_->rank() != 0) return out;
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < counts[r]; ++i) out.push_back(unpack(r, recv.data() + (r * most + i) * kFields));
  return out;
}

StepBreakdown StepTrace::breakdown() const {
  // A blocking communication call runs on the compute thread inside an F/B chunk: exposed,
  // and not compute. An asynchronous one (an overlapped FB pair's collective on the worker)
  // is hidden where a compute event (a pair's compute stretch, or any chunk) covers it.
  std::vector<std::pair<double, double>> busy;  // compute intervals
  for (const auto& e : events_)
    if (!e.comm) busy.push_back({e.start, e.end});
  std::sort(busy.begin(), busy.end());
  std::vector<std::pair<double, double>> merged;
  for (const auto& iv : busy) {
    if (!merged.empty() && iv.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, iv.second);
    else
      merged.push_back(iv);
  }
  auto covered = [&](double a, double b) {
    double c = 0;
    for (const auto& [s, t] : merged) c += std::max(0.0, std::min(b, t) - std::max(a, s));
    return c;
  };
  double compute = 0, exposed = 0, hidden = 0, async = 0, wall = 0;
  for (size_t i = 0; i < events_.size(); ++i) {
    const auto& e = events_[i];
    const double len = e.end - e.start;
    if (!e.comm) {
      compute += len;
    } else if (async_[i]) {
      const double h = std::min(len, covered(e.start, e.end));
      async += len;
      hidden += h;
      exposed += len - h;
    } else {
      exposed += len;
      if (!e.action.sub_steps.empty()) compute -= len;  // a MoE call inside its F/B chunk
    }
  }
  for (size_t i = 0; i < std::min(step_start_.size(), step_end_.size()); ++i) wall += step_end_[i] - step_start_[i];
  StepBreakdown b;
  const double n = world_->size();
  double w = wall;
  if (world_->size() > 1) world_->all_reduce(&wall, &w, 1, comm::DataType::kFloat64, comm::ReduceOp::kMax);
  b.wall = w;
  b.compute = sum_over(*world_, compute) / n;
  b.exposed_comm = sum_over(*world_, exposed) / n;
  b.hidden_comm = sum_over(*world_, hidden) / n;
  b.async_comm = sum_over(*world_, async) / n;
  b.idle = std::max(0.0, b.wall - b.compute - b.exposed_comm);
  return b;
}

void StepTrace::write(const std::string& trace_path, const std::string& svg_path, const std::string& title) const {
  std::vector<pipeline::SimEvent> all = gather();
  if (world_->rank() != 0) return;
  if (!trace_path.empty()) {
    std::ofstream f(trace_path);
    if (!f) SY_THROW(IoError, "cannot write the trace \"" << trace_path << "\"");
    f << pipeline::chrome_trace(all, world_->size(), 1e6).dump() << "\n";
  }
  if (!svg_path.empty()) {
    int steps = 0;
    for (const auto& e : all) steps = std::max(steps, e.action.microbatch + 1);
    std::ofstream f(svg_path);
    if (!f) SY_THROW(IoError, "cannot write the timeline \"" << svg_path << "\"");
    f << pipeline::timeline_svg(all, world_->size(), std::max(steps, 1), title);
  }
}

}  // namespace switchyard::trainer::dist
