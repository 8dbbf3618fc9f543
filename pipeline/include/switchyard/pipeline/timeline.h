// Pictures and traces of a timeline (simulated, or measured by the executor).
//
// timeline_svg draws one row per rank (compute above, communication as a thin lane below),
// one box per chunk coloured by op (F, B, W, BW, FB) and shaded per micro-batch, with the
// micro-batch number inside, like the figures of DeepSeek's DualPipe README.
// chrome_trace returns Chrome/Perfetto trace JSON: one process per rank, thread 0 = compute,
// thread 1 = P2P communication, thread 2 = EP dispatch/combine (events whose action carries one
// MoE sub-step; compute sub-steps go on thread 0 inside their chunk), an arrow (flow event)
// from each send to its receive.
// Pure functions.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "switchyard/pipeline/simulator.h"

namespace switchyard::pipeline {

std::string timeline_svg(const std::vector<SimEvent>& events, int num_ranks, int num_microbatches,
                         const std::string& title);

// us_per_unit: trace microseconds per time unit of the events (1e6 for seconds).
nlohmann::json chrome_trace(const std::vector<SimEvent>& events, int num_ranks, double us_per_unit);

}  // namespace switchyard::pipeline
