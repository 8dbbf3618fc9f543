// StepTrace: measured timeline of distributed training steps on this rank (forward and
// backward compute, each MoE dispatch/combine, gradient reduction), gathered to rank 0 and
// written as a Chrome/Perfetto trace and an SVG timeline (pipeline/timeline.h), plus the
// step time breakdown (compute, exposed communication, idle).
//
// Events use pipeline::SimEvent: F / B compute chunks (microbatch = step index), REDUCE for
// the gradient all-reduce, and communication events carrying one DISPATCH or COMBINE
// sub-step (the EP lane of the trace). Times are seconds since the trace's origin (a
// steady_clock instant agreed over the world at construction; one host, so clocks agree).
//
// Not thread-safe. record() is cheap (one vector push) and only active while enabled().
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/pipeline/simulator.h"

namespace switchyard::trainer::dist {

struct StepBreakdown {
  double wall = 0;          // sum over recorded steps of the step wall time (max over ranks)
  double compute = 0;       // F + B chunks, mean over ranks
  double exposed_comm = 0;  // communication not overlapped by compute, mean over ranks
  double hidden_comm = 0;   // communication overlapped by compute, mean over ranks
  double idle = 0;          // wall - compute - exposed_comm (waiting, optimizer, data)
  double hidden_share() const {
    return exposed_comm + hidden_comm > 0 ? hidden_comm / (exposed_comm + hidden_comm) : 0;
  }
};

class StepTrace {
 public:
  // Collective over world (agrees on the time origin).
  explicit StepTrace(std::shared_ptr<comm::Communicator> world);

  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  double now() const;  // seconds since the origin

  void record_compute(pipeline::OpKind kind, int step, double start, double end);
  void record_comm(pipeline::SubStepKind kind, bool backward, int layer, int step, double start, double end);
  void record_reduce(int step, double start, double end);
  // Step boundaries (recorded only while enabled, so the breakdown covers traced steps).
  void begin_step(int step, double start) {
    step_ = step;
    if (enabled_) step_start_.push_back(start);
  }
  void end_step(double end) {
    if (enabled_) step_end_.push_back(end);
  }
  int step() const { return step_; }

  // Collective: all ranks' events on rank 0 (empty elsewhere).
  std::vector<pipeline::SimEvent> gather() const;
  // Breakdown over the recorded steps (collective; same result on every rank).
  StepBreakdown breakdown() const;
  // Rank 0 writes the trace JSON and the SVG (collective; empty paths skip).
  void write(const std::string& trace_path, const std::string& svg_path, const std::string& title) const;

 private:
  std::shared_ptr<comm::Communicator> world_;
  std::chrono::steady_clock::time_point origin_;
  bool enabled_ = false;
  int step_ = 0;
  std::vector<pipeline::SimEvent> events_;
  std::vector<double> step_start_, step_end_;
};

}  // namespace switchyard::trainer::dist
