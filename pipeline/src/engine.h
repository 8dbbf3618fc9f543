// Private: the event engine shared by simulate() and verify(). It walks every rank's action
// list, starting each item when the rules of simulator.h allow it, and throws InvalidArgument
// on a deadlock. With strict_order each rank runs its list strictly in order (a blocking
// executor); without it compute and communication are separate in-order streams.
#pragma once

#include <vector>

#include "switchyard/pipeline/simulator.h"

namespace switchyard::pipeline::detail {

struct EngineOptions {
  SimOptions durations;
  bool strict_order = false;
  bool record_events = false;
};

struct EngineResult {
  double makespan = 0;
  std::vector<double> busy;
  std::vector<SimEvent> events;
  int num_transfers = 0;
  int num_reductions = 0;
};

// Requires a schedule that passed verify_static().
EngineResult run_engine(const Schedule& s, const EngineOptions& opt);

}  // namespace switchyard::pipeline::detail
