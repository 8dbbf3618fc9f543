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
// MoE sub-steps (SimOptions::moe): instead of f, b, w, fb, every chunk's duration comes from
// the timeline of its sub-steps (attention, dispatch, experts, combine per MoE layer) on two
// in-order streams of the rank: compute (ATTN, EXPERTS) and EP communication (DISPATCH,
// COMBINE). A sub-step starts when its stream is free and the previous sub-step of the same
// micro-batch (and direction) has ended; the chunk lasts until its last sub-step ends. A lone
// chunk therefore waits for its own collectives (its duration is the sum), while an FB pair
// in the DeepSeek-V3 figure-4 order (add_moe_sub_steps) runs one micro-batch's
// dispatch/combine during the other's compute: per layer pair it takes
//   max(COMBINE.B, ATTN.F) + max(DISPATCH.F, EXPERTS.B + EXPERTS.W)
//   + max(DISPATCH.B, EXPERTS.F) + max(COMBINE.F, ATTN.B + ATTN.W).
// A full backward (BW, and the backward half of FB) runs each weight-gradient part right
// after its input-gradient part (figure 4's MLP(W), ATTN(W)); a split B does not, and W is
// one compute block of L (experts_w + attn_w).
//
// Bubble of a rank = makespan (the whole step, same for all ranks) - its compute busy time.
// Pure function; thread-safe.
#pragma once

#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline {

// Per-layer durations of the sub-steps of one micro-batch on one stage (all layers alike).
struct MoeTimes {
  int layers = 1;  // MoE layers per stage, used for chunks that carry no sub-steps
  double attn_f = 0, dispatch_f = 0, experts_f = 0, combine_f = 0;  // forward
  double combine_b = 0, experts_b = 0, dispatch_b = 0, attn_b = 0;  // backward for inputs
  double experts_w = 0, attn_w = 0;                                 // weight gradients
  // Lone chunks: f = L(attn_f + dispatch_f + experts_f + combine_f), w = L(experts_w + attn_w),
  // b = L(combine_b + experts_b + dispatch_b + attn_b) + w (full backward).
  double f() const;
  double b() const;
  double w() const;
};

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
  // When set, chunk durations come from sub-step timelines (see the top of this file) and
  // f, b, w, fb, f_comm, b_comm are ignored.
  std::optional<MoeTimes> moe;
  double duration(OpKind kind) const;  // compute chunk durations from the fields above
  double pair() const;                  // the F&B duration in use
  // Duration of one compute chunk: duration(a.kind), or its sub-step timeline's length.
  double chunk_duration(const Action& a) const;
};

// One sub-step placed in time, relative to the start of its chunk.
struct TimedSubStep {
  SubStep step;
  bool collective = false;  // on the EP communication stream
  double start = 0, end = 0;
};

// The two-stream timeline of a compute chunk's sub-steps: a.sub_steps if the action carries
// them, else moe_sub_steps(a, t.layers). W (no sub-steps) is one compute block. Throws
// InvalidArgument for a non-compute action.
std::vector<TimedSubStep> sub_step_timeline(const Action& a, const MoeTimes& t);

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
  std::vector<SimEvent> events;  // with SimOptions::moe also one event per sub-step (its action
                                 // carries that one sub-step; comm = EP collective)
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
// With opt.moe, F, B, W and F&B are the chunk times of the sub-step timelines.
double closed_form_bubble(const std::string& schedule, int num_ranks, const SimOptions& opt,
                          std::string* precondition = nullptr);

}  // namespace switchyard::pipeline
