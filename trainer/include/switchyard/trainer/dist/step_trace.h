// StepTrace: measured timeline of distributed training steps on this rank (forward and
// backward compute, each MoE dispatch/combine, gradient reduction), gathered to rank 0 and
// written as a Chrome/Perfetto trace and an SVG timeline (pipeline/timeline.h), plus the
// step time breakdown (compute, exposed communication, idle).
//
// Events use pipeline::SimEvent: F / B compute chunks (microbatch = step index), REDUCE for
// the gradient all-reduce, and communication events carrying one DISPATCH or COMBINE
// sub-step (the EP lane of the trace). An overlapped FB pair (fb_overlap.h) records instead
// compute segments, each carrying one ATTN/EXPERTS sub-step with the real micro-batch, and
// asynchronous communication events (sub-step micro-batch set). Times are seconds since the
// trace's origin (a steady_clock instant agreed over the world at construction; one host,
// so clocks agree).
//
// Breakdown per rank: a blocking communication event (the default) lies inside a compute
// chunk on the same thread and counts as exposed; an asynchronous one counts as hidden for
// the part of it that some compute event covers, exposed for the rest.
//
// Thread-safe recording (a mutex; the FB overlap records from three threads); the other
// methods are called from one thread. record() is cheap and only active while enabled().
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
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
  double async_comm = 0;    // the part issued asynchronously (overlapped FB pairs), mean over ranks
  double hidden_share() const {
    return exposed_comm + hidden_comm > 0 ? hidden_comm / (exposed_comm + hidden_comm) : 0;
  }
  // Share of the asynchronous (FB pair) communication that compute covered.
  double pair_hidden_share() const { return async_comm > 0 ? hidden_comm / async_comm : 0; }
};

class StepTrace {
 public:
  // Collective over world (agrees on the time origin).
  explicit StepTrace(std::shared_ptr<comm::Communicator> world);

  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  double now() const;  // seconds since the origin

  void record_compute(pipeline::OpKind kind, int step, double start, double end);
  // microbatch: of the sub-step (-1: not known, the step index is used); async: ran on
  // another thread than the compute (see the breakdown above).
  void record_comm(pipeline::SubStepKind kind, bool backward, int layer, int step, double start, double end,
                   int microbatch = -1, bool async = false);
  // A compute stretch of an overlapped pair: sub-step s (its kind, micro-batch, direction).
  void record_segment(const pipeline::SubStep& s, int step, double start, double end);
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
  // This rank's events so far (not while another thread records). async_flags()[i] is
  // whether events()[i] is an asynchronous communication event.
  const std::vector<pipeline::SimEvent>& events() const { return events_; }
  const std::vector<bool>& async_flags() const { return async_; }

  // Collective: all ranks' events on rank 0 (empty elsewhere).
  std::vector<pipeline::SimEvent> gather() const;
  // Breakdown over the recorded steps (collective; same result on every rank).
  StepBreakdown breakdown() const;
  // Rank 0 writes the trace JSON and the SVG (collective; empty paths skip).
  void write(const std::string& trace_path, const std::string& svg_path, const std::string& title) const;

 private:
  void push(pipeline::SimEvent e, bool async);

  std::shared_ptr<comm::Communicator> world_;
  std::chrono::steady_clock::time_point origin_;
  bool enabled_ = false;
  int step_ = 0;
  mutable std::mutex mu_;  // guards events_ and async_ while recording
  std::vector<pipeline::SimEvent> events_;
  std::vector<bool> async_;  // [events_.size()]
  std::vector<double> step_start_, step_end_;
};

}  // namespace switchyard::trainer::dist
