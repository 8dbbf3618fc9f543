// Executor: runs one rank's part of a Schedule on real ranks.
//
// The caller supplies the stage compute as callbacks (forward, backward for inputs, backward
// for weights, optionally a fused forward+backward pair) over FP64 activation buffers of a
// fixed size, and a gradient buffer per held stage. The executor walks the rank's action list
// in order: a run of SEND/RECV actions is posted as one asynchronous batch over the
// communicator (ibatch_send_recv) and the executor moves on at once, so transfers travel
// while later chunks compute; a chunk waits only for the batch that carries its input.
// REDUCE sums a stage's gradient buffer over the ranks holding a copy of it (DualPipe mirror
// ranks) with an all-reduce on a sub-communicator made at construction.
// Gradient accumulation over micro-batches is the callbacks' job (backward_weight adds into
// the stage's gradient buffer); the executor only orders the calls.
//
// Threading: one thread per rank calls run(); callbacks run on that thread. Construction is
// collective over `comm` (it splits the mirror groups). Every rank must construct an Executor
// from the same Schedule, whose ranks are the ranks of `comm`.
// Ownership: the executor owns the activation and gradient transfer buffers of a step; the
// callbacks own the model and its saved tensors.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/pipeline/overlap.h"
#include "switchyard/pipeline/schedule.h"
#include "switchyard/pipeline/simulator.h"

namespace switchyard::pipeline {

struct StageCallbacks {
  // Forward of (stage, mb). in: [activation_elems] FP64, nullptr at stage 0 (the callback reads
  // its own input). out: [activation_elems] FP64 to fill (unused after the last stage, where
  // the callback computes the loss itself).
  std::function<void(int stage, int mb, const double* in, double* out)> forward;
  // Backward for inputs of (stage, mb). grad_out: [activation_elems] gradient of the stage
  // output, nullptr at the last stage (start from the loss). grad_in: [activation_elems] to
  // fill, nullptr at stage 0. Must leave the weight gradient to backward_weight.
  std::function<void(int stage, int mb, const double* grad_out, double* grad_in)> backward_input;
  // Weight gradient of (stage, mb), added into the stage's gradient buffer.
  std::function<void(int stage, int mb)> backward_weight;
  // Optional fused F&B pair (forward of f_*, full backward of b_*). When empty the executor
  // calls forward, then backward_input and backward_weight.
  std::function<void(int f_stage, int f_mb, const double* in, double* out, int b_stage, int b_mb,
                     const double* grad_out, double* grad_in)>
      forward_backward;
  // FP64 gradient buffer of a stage held by this rank (summed over copies by REDUCE).
  std::function<std::span<double>(int stage)> gradients;
};

class Executor {
 public:
  // activation_elems: FP64 elements of every activation and activation gradient that moves
  // between stages (one static shape, as in DeepSeek's reference).
  Executor(std::shared_ptr<comm::Communicator> comm, Schedule schedule, size_t activation_elems,
           StageCallbacks callbacks);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs this rank's action list once (one training step's forward and backward). Blocking;
  // rethrows comm errors (Timeout, PeerFailure) and callback exceptions.
  void run();

  // Measured timeline of the last run() on this rank: seconds on CLOCK_MONOTONIC (comparable
  // across the processes of one host). P2P events carry flow ids shared by send and receive.
  const std::vector<SimEvent>& events() const { return events_; }

  // Adds MoE sub-step intervals measured by the callbacks (run_overlapped_pair) to this rank's
  // timeline, so write_trace shows them: compute sub-steps on the compute lane (inside their
  // chunk), dispatch/combine on an "ep comm" lane. Call after run(), before write_trace().
  void add_sub_step_events(const std::vector<SubStepEvent>& sub_steps);

  // Collective: gathers every rank's events on rank 0 and writes one Chrome/Perfetto trace
  // there (times relative to the earliest event, flow arrows send -> receive).
  void write_trace(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<SimEvent> events_;
};

}  // namespace switchyard::pipeline
