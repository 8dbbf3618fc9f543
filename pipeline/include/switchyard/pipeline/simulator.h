// Timed simulation of a Schedule.
//
// Each rank has a compute stream and a communication stream. Compute chunks run in list order
// on the compute stream, each as soon as its inputs are there (the forward of the previous
// stage, the backward of the next one, received or local). A batch of consecutive SEND/RECV
// actions is posted on the communication stream after the previous batch has completed and
// once the data it sends is computed; each operation completes p2p_latency after both it and
// its partner are posted (rendezvous). REDUCE posts once the rank's backward work on the stage
// is done and ends reduce_time after the last holder posts. Compute and communication overlap.
//
// Durations follow DeepSeek's DualPipe notation: b is a FULL backward chunk, w its weight
// part, so a split B (input gradient only) takes b - w; fb is an overlapped F&B pair.
//
// Bubble of a rank = makespan (the whole step, same for all ranks) - its compute busy time.
// Pure function; thread-safe.
#pragma once

#include <limits>
#include <string>
#include <vector>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline {

struct SimOptions {
  double f = 1.0;   // forward chunk
  double b = 2.0;   // full backward chunk (input + weight)
  double w = 1.0;   // weight-gradient part of b; requires 0 <= w <= b
  double fb = std::numeric_limits<double>::quiet_NaN();  // F&B pair; NaN: derived, see below
  // Communication (EP dispatch + combine) inside an F and inside a full backward, already
  // included in f and b (a lone chunk waits for its own collectives). When fb is NaN the pair
  // is derived assuming perfect overlap of one chunk's communication with the other's compute:
  // fb = max(f - f_comm + b - b_comm, f_comm + b_comm); with both 0 that is f + b.
  double f_comm = 0.0;
  double b_comm = 0.0;
  double p2p_latency = 0.0;  // per transfer
  double reduce_time = 0.0;  // per REDUCE
  double duration(OpKind kind) const;  // compute chunk durations from the fields above
  double pair() const;                  // the F&B duration in use
};

// One interval of the timeline (for traces and pictures).
struct SimEvent {
  int rank = 0;
  bool comm = false;  // communication stream
  double start = 0, end = 0;
  Action action;
  int flow_id = -1;   // P2P: same id on the send and its receive
};

struct SimResult {
  double makespan = 0;
  std::vector<double> busy;     // compute busy time per rank
  std::vector<double> bubble;   // makespan - busy, per rank
  std::vector<int> peak_activations;  // per rank, in (stage, micro-batch) chunks
  int parameter_copies = 1;     // ranks holding each stage (2 for DualPipe)
  std::vector<int> stages_per_rank;
  std::vector<SimEvent> events;
  double max_bubble() const;
  double mean_bubble() const;
};

// Throws InvalidArgument on bad options or a schedule that fails verify_static, and on a
// deadlock (naming what each stuck rank waits for).
SimResult simulate(const Schedule& s, const SimOptions& opt);

// Closed-form bubble of DeepSeek's DualPipe README table for the schedules that have one,
// with PP = pipeline stages (1F1B/ZB-H1/DualPipe: ranks; DualPipeV: 2 * ranks):
//   1f1b (PP-1)(F+B); zb-h1 (PP-1)(F+B-2W); dualpipe and dualpipev (PP/2-1)(F&B+B-3W);
//   interleaved-1f1b (PP_ranks-1)(F+B) with per-chunk F and B.
// Returns NaN for schedules without one (zbv) and fills `precondition` with when it holds.
double closed_form_bubble(const std::string& schedule, int num_ranks, const SimOptions& opt,
                          std::string* precondition = nullptr);

}  // namespace switchyard::pipeline
