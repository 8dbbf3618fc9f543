// Running the MoE sub-steps of chunks: serially, or as an overlapped F&B pair in which each
// dispatch/combine of one micro-batch travels while the other micro-batch computes
// (DeepSeek-V3 figure 4; the order is the one add_moe_sub_steps writes into FB actions).
//
// A task is either a compute sub-step (run() executes it on the calling thread) or a
// collective (start() posts it, typically an async dispatch or combine that progresses on
// another thread, and returns the function that waits for it).
// run_overlapped_pair(fwd, bwd) requires the forward list to alternate compute, collective,
// ... starting with compute and the backward list to alternate collective, compute, ...
// starting with a collective, with equal lengths (true for any number of MoE layers):
// at each index k it starts the collective of one list, runs the compute of the other, then
// waits for the collective. Data dependencies inside each list are respected because each
// list's step k-1 has finished before its step k starts.
// Events get CLOCK_MONOTONIC seconds. Single-threaded use; tasks may start helper threads.
#pragma once

#include <functional>
#include <vector>

#include "switchyard/pipeline/action.h"

namespace switchyard::pipeline {

struct SubStepTask {
  SubStep step;
  std::function<void()> run;                     // compute sub-step
  std::function<std::function<void()>()> start;  // collective: post, return the wait
  bool collective() const { return static_cast<bool>(start); }
};

struct SubStepEvent {
  SubStep step;
  bool collective = false;
  double start = 0, end = 0;  // collective: from post to the end of its wait
};

// Serial baseline: every task in order, each collective waited for right after it is posted.
void run_serial(std::vector<SubStepTask>& tasks, std::vector<SubStepEvent>* events);

// Overlapped pair; throws InvalidArgument if the lists do not alternate as described above.
void run_overlapped_pair(std::vector<SubStepTask>& fwd, std::vector<SubStepTask>& bwd,
                         std::vector<SubStepEvent>* events);

double monotonic_seconds();

}  // namespace switchyard::pipeline
