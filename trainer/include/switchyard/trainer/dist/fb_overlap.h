// FbOverlap: one pipeline FB pair (the forward of one micro-batch and the full backward of
// another, DeepSeek-V3 figure 4) run so that each MoE dispatch/combine of one micro-batch
// travels while the other micro-batch computes.
//
// How. The two halves run as two lanes (the backward on the calling thread, the forward on a
// helper thread) that take turns on one compute baton: exactly one lane computes at a time.
// Every EP collective of a lane (DispatchedExperts' dispatch::Buffer calls, which find the
// lane through current_fb_lane()) is a yield point: the lane posts the call to a
// communication worker (pipeline::CommWorker, one thread, calls run in posting order), hands
// the baton to the other lane, waits for the call, then waits for the baton to come back.
// The backward lane starts with the baton, so the order is figure 4's: B's tail compute,
// then [combine-backward of B || attention+router of F], [dispatch of F || experts-backward
// of B], [dispatch-backward of B || experts of F], [combine of F || router+attention
// backward of B], ... for any number of MoE layers in either half (a lane whose
// collectives are over computes on alone, its collectives waited for in turn).
//
// Why it is safe.
// - Collective order: the baton alternates strictly between two live lanes and a lane posts
//   only while holding it, so the worker runs the collectives as B1, F1, B2, F2, ... (then the
//   rest of the longer lane): a function of the two halves' collective lists only,
//   hence the same on every rank of the EP group (they run the same schedule). One
//   collective at a time on the shared dispatch::Buffer, always on the worker thread.
// - Results: each half runs the unchanged model code on its own micro-batch's model copy
//   (the two micro-batches of a pair always differ), so losses and gradients are bitwise
//   those of running F then B.
// - Errors: a lane that throws hands the baton on and finishes; run_pair rethrows the
//   backward lane's error first, else the forward lane's (peers see Timeout/PeerFailure).
//
// Trace (when the StepTrace is enabled): each stretch a lane computes with the baton is a
// compute event carrying one sub-step (ATTN or EXPERTS, the micro-batch, forward/backward);
// each collective is an asynchronous comm event (its run on the worker) of its micro-batch.
// StepTrace::breakdown counts the part of these under some compute event as hidden.
//
// Threading: run_pair is called from one thread at a time (the executor's). The lanes'
// callbacks must not use anything the other lane uses except through collective().
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "switchyard/pipeline/action.h"
#include "switchyard/pipeline/comm_worker.h"
#include "switchyard/pipeline/overlap.h"
#include "switchyard/trainer/dist/step_trace.h"

namespace switchyard::trainer::dist {

class FbLane;

// The lane of a running pair the calling thread belongs to; nullptr outside run_pair.
FbLane* current_fb_lane();

class FbLane {
 public:
  // Runs call (one blocking EP collective of this lane's micro-batch, MoE layer `layer`) on
  // the communication worker while the other lane computes; returns (or rethrows call's
  // error) once call finished and this lane holds the baton again.
  void collective(pipeline::SubStepKind kind, bool backward, int layer, const std::function<void()>& call);

 private:
  friend class FbOverlap;
  struct Pair;
  FbLane(Pair* pair, int index, int stage, int microbatch, bool backward)
      : pair_(pair), index_(index), stage_(stage), mb_(microbatch), backward_(backward) {}
  void run(const std::function<void()>& body);  // the whole lane on the calling thread
  void acquire();                               // waits for the baton
  void hand_over();                             // gives the baton to the other lane (if live)
  void record_segment(pipeline::SubStepKind kind, int layer, double end);

  Pair* pair_;
  int index_;  // 0 forward, 1 backward
  int stage_;
  int mb_;
  bool backward_;
  double segment_start_ = 0;  // StepTrace clock
  double segment_mono_ = 0;   // CLOCK_MONOTONIC (pipeline::monotonic_seconds)
};

class FbOverlap {
 public:
  // trace: where events go (nullptr: none); must outlive this object.
  explicit FbOverlap(StepTrace* trace);
  ~FbOverlap();
  FbOverlap(const FbOverlap&) = delete;
  FbOverlap& operator=(const FbOverlap&) = delete;

  // forward: the whole forward chunk of (f_stage, f_mb); backward: the whole backward (input
  // and weight) chunk of (b_stage, b_mb), b_mb != f_mb. Blocking; both have finished on return.
  void run_pair(int f_stage, int f_mb, const std::function<void()>& forward, int b_stage, int b_mb,
                const std::function<void()>& backward);

  int64_t pairs_run() const { return pairs_; }
  int64_t collectives_run() const { return collectives_; }
  // Sub-step intervals of the pairs since clear_sub_steps() (CLOCK_MONOTONIC seconds, the
  // executor's clock: pipeline::Executor::add_sub_step_events puts them in its trace).
  const std::vector<pipeline::SubStepEvent>& sub_steps() const { return sub_steps_; }
  void clear_sub_steps() { sub_steps_.clear(); }

 private:
  StepTrace* trace_;
  pipeline::CommWorker comm_;  // runs the collectives
  pipeline::CommWorker lane_;  // runs the forward lane
  int64_t pairs_ = 0, collectives_ = 0;
  std::mutex mu_;  // sub_steps_ while a pair runs (lanes and worker record)
  std::vector<pipeline::SubStepEvent> sub_steps_;
};

}  // namespace switchyard::trainer::dist
