// sy-overlap-perf: overlap of MoE dispatch/combine with compute in F&B pairs, on CPU ranks.
//
// Every rank runs a synthetic MoE layer (pipeline::SyntheticMoeStage) with the EP group = all
// ranks, and pipeline::measure_fb_overlap times F&B pairs serial (each dispatch/combine
// waited for right after it is posted) and overlapped (DeepSeek-V3 figure 4 order).
// Prints medians and efficiency = (serial - overlapped) / min(compute, communication).
//   sy-run -n 2 -- sy-overlap-perf --tokens 256 --hidden 128 [--json]
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/synthetic_moe.h"

DEFINE_int32(tokens, 256, "tokens per rank and micro-batch");
DEFINE_int32(hidden, 256, "hidden size");
DEFINE_int32(experts, 8, "experts (multiple of the rank count)");
DEFINE_int32(top_k, 2, "experts per token");
DEFINE_int32(compute_repeat, 1, "repeat the compute sub-steps to change the compute/communication ratio");
DEFINE_int32(reps, 7, "measured pairs per mode (median reported, >= 5)");
DEFINE_int32(warmup, 2, "unmeasured pairs first");
DEFINE_bool(json, false, "print JSON");

using namespace switchyard;
using namespace switchyard::pipeline;

int main(int argc, char** argv) {
  gflags::SetUsageMessage("overlap of MoE dispatch/combine with compute; run under sy-run");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    SY_REQUIRE(FLAGS_reps >= 5, "--reps = " << FLAGS_reps << " must be >= 5 (medians of at least 5)");
    auto world = comm::Communicator::init();
    SyntheticMoeOptions opt;
    opt.tokens = FLAGS_tokens;
    opt.hidden = FLAGS_hidden;
    opt.experts = FLAGS_experts;
    opt.top_k = FLAGS_top_k;
    opt.compute_repeat = FLAGS_compute_repeat;
    OverlapMeasurement m = measure_fb_overlap(world, opt, FLAGS_reps, FLAGS_warmup);
    const double longer = std::max(m.compute_s, m.communication_s);
    if (world->rank() == 0) {
      if (FLAGS_json) {
        nlohmann::json j = {{"ranks", world->size()},       {"tokens", opt.tokens},
                            {"hidden", opt.hidden},         {"experts", opt.experts},
                            {"top_k", opt.top_k},           {"compute_repeat", opt.compute_repeat},
                            {"reps", FLAGS_reps},           {"serial_s", m.serial_s},
                            {"overlapped_s", m.overlapped_s}, {"compute_s", m.compute_s},
                            {"communication_s", m.communication_s},
                            {"overlapped_over_serial", m.overlapped_s / m.serial_s},
                            {"overlapped_over_longer", m.overlapped_s / longer},
                            {"efficiency", m.efficiency()}};
        std::cout << j.dump(2) << "\n";
      } else {
        std::printf("ranks %d tokens %d hidden %d experts %d top_k %d compute_repeat %d reps %d (medians)\n",
                    world->size(), opt.tokens, opt.hidden, opt.experts, opt.top_k, opt.compute_repeat, FLAGS_reps);
        std::printf("%-14s %12s\n", "measure", "ms");
        std::printf("%-14s %12.3f\n", "serial", m.serial_s * 1e3);
        std::printf("%-14s %12.3f\n", "overlapped", m.overlapped_s * 1e3);
        std::printf("%-14s %12.3f\n", "compute", m.compute_s * 1e3);
        std::printf("%-14s %12.3f\n", "communication", m.communication_s * 1e3);
        std::printf("overlapped/serial %.3f  overlapped/max(compute,comm) %.3f  efficiency %.3f\n",
                    m.overlapped_s / m.serial_s, m.overlapped_s / longer, m.efficiency());
      }
    }
    world->barrier();
  } catch (const Error& e) {
    std::fprintf(stderr, "sy-overlap-perf: %s\n", e.what());
    return 2;
  }
  return 0;
}
