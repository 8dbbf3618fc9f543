// Serial and overlapped execution of MoE sub-steps (overlap.h).
#include "switchyard/pipeline/overlap.h"

#include <time.h>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {

double monotonic_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

namespace {

void note(std::vector<SubStepEvent>* events, const SubStepTask& t, double start, double end) {
  if (events) events->push_back({t.step, t.collective(), start, end});
}

}  // namespace

void run_serial(std::vector<SubStepTask>& tasks, std::vector<SubStepEvent>* events) {
  for (SubStepTask& t : tasks) {
    const double start = monotonic_seconds();
    if (t.collective())
      t.start()();
    else
      t.run();
    note(events, t, start, monotonic_seconds());
  }
}

void run_overlapped_pair(std::vector<SubStepTask>& fwd, std::vector<SubStepTask>& bwd,
                         std::vector<SubStepEvent>* events) {
  SY_REQUIRE(fwd.size() == bwd.size(), "run_overlapped_pair: " << fwd.size() << " forward and " << bwd.size()
                                                               << " backward sub-steps (must be equal)");
  for (size_t k = 0; k < fwd.size(); ++k) {
    const bool fwd_collective = k % 2 == 1;
    SubStepTask& coll = fwd_collective ? fwd[k] : bwd[k];
    SubStepTask& comp = fwd_collective ? bwd[k] : fwd[k];
    SY_REQUIRE(coll.collective() && !comp.collective(),
               "run_overlapped_pair: sub-step " << k << " must pair a collective with a compute step ("
                                                << sub_step_kind_name(coll.step.kind) << ", "
                                                << sub_step_kind_name(comp.step.kind) << ")");
    const double c0 = monotonic_seconds();
    std::function<void()> wait = coll.start();
    const double p0 = monotonic_seconds();
    comp.run();
    const double p1 = monotonic_seconds();
    wait();
    const double c1 = monotonic_seconds();
    note(events, comp, p0, p1);
    note(events, coll, c0, c1);
  }
}

}  // namespace switchyard::pipeline
