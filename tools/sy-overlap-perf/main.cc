// sy-overlap-perf: overlap of MoE dispatch/combine with compute in F&B pairs, on CPU ranks.
//
// Every rank runs a synthetic MoE layer (pipeline::SyntheticMoeStage) with the EP group = all
// ranks, and pipeline::measure_fb_overlap times F&B pairs serial (each dispatch/combine
// waited for right after it is posted) and overlapped (DeepSeek-V3 figure 4 order),
// interleaved rep by rep. Prints medians of compute alone, communication alone, serial,
// overlapped, and efficiency = (serial - overlapped) / min(compute, communication).
//
// Placement: --compute_cpus and --comm_cpus are comma lists indexed by rank (entry
// rank % length); the rank's compute thread (this thread) is pinned to its compute CPU, and
// its collectives run on a pipeline::CommWorker pinned to its comm CPU; the communicator's
// own progress thread is created while this thread is pinned to the comm CPU, so it lives
// there too. All compute is single-threaded loops (no BLAS threads).
//   sy-run -n 2 -- sy-overlap-perf --compute_cpus 0,1 --comm_cpus 1,0   # 2 ranks, 2 busy cores
//   sy-run -n 2 -- sy-overlap-perf --compute_cpus 0 --comm_cpus 1       # compute | comm cores
#include <gflags/gflags.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/comm_worker.h"
#include "switchyard/pipeline/fb_overlap_report.h"
#include "switchyard/pipeline/synthetic_moe.h"

DEFINE_int32(tokens, 256, "tokens per rank and micro-batch");
DEFINE_int32(hidden, 256, "hidden size");
DEFINE_int32(experts, 8, "experts (multiple of the rank count)");
DEFINE_int32(top_k, 2, "experts per token");
DEFINE_int32(compute_repeat, 1, "repeat the compute sub-steps to change the compute/communication ratio");
DEFINE_int32(reps, 7, "measured pairs per mode (median reported, >= 5)");
DEFINE_int32(warmup, 2, "unmeasured pairs first");
DEFINE_string(compute_cpus, "", "comma list of CPUs, entry rank % n pins that rank's compute thread (empty: no pin)");
DEFINE_string(comm_cpus, "", "comma list of CPUs, entry rank % n pins that rank's communication thread (empty: no pin)");
DEFINE_string(collectives, "worker",
              "where dispatch/combine run: worker (one pinnable CommWorker thread) or async (dispatch_async, "
              "a new thread per collective, cannot be pinned)");
DEFINE_string(label, "", "free text copied into the output (e.g. the configuration name)");
DEFINE_bool(json, false, "print JSON");
DEFINE_bool(phases, false,
            "also print where each pair's time goes, per rank and phase (pipeline/fb_overlap_report.h; "
            "with --json: a per-rank totals array)");

using namespace switchyard;
using namespace switchyard::pipeline;

namespace {

// Entry rank % n of a comma list of CPU numbers; -1 for an empty list.
int cpu_for_rank(const std::string& list, const char* flag, int rank) {
  if (list.empty()) return -1;
  std::vector<int> cpus;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      int v = std::stoi(item, &used);
      SY_REQUIRE(used == item.size() && v >= 0, "");
      cpus.push_back(v);
    } catch (const std::exception&) {
      SY_THROW(InvalidArgument, "--" << flag << " = '" << list << "': '" << item << "' is not a CPU number");
    }
  }
  SY_REQUIRE(!cpus.empty(), "--" << flag << " = '" << list << "' lists no CPU");
  return cpus[rank % cpus.size()];
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("overlap of MoE dispatch/combine with compute; run under sy-run");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    SY_REQUIRE(FLAGS_reps >= 5, "--reps = " << FLAGS_reps << " must be >= 5 (medians of at least 5)");
    SY_REQUIRE(FLAGS_collectives == "worker" || FLAGS_collectives == "async",
               "--collectives = '" << FLAGS_collectives << "': valid are worker, async");
    SY_REQUIRE(FLAGS_collectives == "worker" || FLAGS_comm_cpus.empty(),
               "--comm_cpus needs --collectives worker (async helper threads cannot be pinned)");
    // The rank from the launcher's environment, before init (the progress thread is created there).
    const int early_rank = comm::LaunchEnv::detect().rank;
    const int comm_cpu = cpu_for_rank(FLAGS_comm_cpus, "comm_cpus", early_rank);
    pin_current_thread(comm_cpu);  // the communicator's progress thread inherits this
    auto world = comm::Communicator::init();
    std::shared_ptr<CommWorker> worker;
    if (FLAGS_collectives == "worker") worker = std::make_shared<CommWorker>(comm_cpu);
    const int compute_cpu = cpu_for_rank(FLAGS_compute_cpus, "compute_cpus", world->rank());
    pin_current_thread(compute_cpu);
    SyntheticMoeOptions opt;
    opt.tokens = FLAGS_tokens;
    opt.hidden = FLAGS_hidden;
    opt.experts = FLAGS_experts;
    opt.top_k = FLAGS_top_k;
    opt.compute_repeat = FLAGS_compute_repeat;
    std::vector<FbPairTrace> trace;
    OverlapMeasurement m =
        measure_fb_overlap(world, opt, FLAGS_reps, FLAGS_warmup, worker, FLAGS_phases ? &trace : nullptr);
    std::string phases;
    std::vector<FbRankPhases> totals;
    FbGroupPhases group;
    if (FLAGS_phases && world->rank() == 0) phases = fb_phase_report(trace, &totals, &group);
    if (world->rank() == 0) {
      if (FLAGS_json) {
        nlohmann::json j = {{"label", FLAGS_label},
                            {"ranks", world->size()},
                            {"tokens", opt.tokens},
                            {"hidden", opt.hidden},
                            {"experts", opt.experts},
                            {"top_k", opt.top_k},
                            {"compute_repeat", opt.compute_repeat},
                            {"reps", FLAGS_reps},
                            {"collectives", FLAGS_collectives},
                            {"compute_cpus", FLAGS_compute_cpus},
                            {"comm_cpus", FLAGS_comm_cpus},
                            {"compute_s", m.compute_max_s},
                            {"communication_s", m.communication_max_s},
                            {"compute_rank0_s", m.compute_s},
                            {"communication_rank0_s", m.communication_s},
                            {"serial_compute_rank0_s", m.serial_compute_s},
                            {"serial_communication_rank0_s", m.serial_communication_s},
                            {"serial_s", m.serial_s},
                            {"overlapped_s", m.overlapped_s},
                            {"serial_range_s", {m.serial_min_s, m.serial_max_s}},
                            {"overlapped_range_s", {m.overlapped_min_s, m.overlapped_max_s}},
                            {"serial_quartiles_s", {m.serial_q1_s, m.serial_q3_s}},
                            {"overlapped_quartiles_s", {m.overlapped_q1_s, m.overlapped_q3_s}},
                            {"overlapped_over_serial", m.overlapped_s / m.serial_s},
                            {"overlapped_over_serial_paired", m.ratio_paired},
                            {"overlapped_over_longer", m.overlapped_over_longer()},
                            {"efficiency", m.efficiency()},
                            {"efficiency_paired", m.efficiency_paired()}};
        if (FLAGS_phases) {
          j["phases_group"] = {{"overlapped_s", group.overlapped_s},
                               {"compute_bound_s", group.compute_bound_s},
                               {"exposed_s", group.exposed_s}};
          j["phases"] = nlohmann::json::array();
          for (const FbRankPhases& p : totals)
            j["phases"].push_back({{"rank", p.rank},
                                   {"serial_s", p.serial_s},
                                   {"overlapped_s", p.overlapped_s},
                                   {"serial_compute_s", p.serial_compute_s},
                                   {"serial_comm_s", p.serial_comm_s},
                                   {"serial_peers_s", p.serial_peers_s},
                                   {"serial_xfer_s", p.serial_xfer_s},
                                   {"overlapped_compute_s", p.overlapped_compute_s},
                                   {"exposed_s", p.exposed_s},
                                   {"exposed_peers_s", p.exposed_peers_s}});
        }
        std::cout << j.dump() << "\n";
      } else {
        std::printf("%sranks %d tokens %d hidden %d experts %d top_k %d compute_repeat %d reps %d collectives %s "
                    "compute_cpus [%s] comm_cpus [%s]\n",
                    FLAGS_label.empty() ? "" : (FLAGS_label + ": ").c_str(), world->size(), opt.tokens, opt.hidden,
                    opt.experts, opt.top_k, opt.compute_repeat, FLAGS_reps, FLAGS_collectives.c_str(),
                    FLAGS_compute_cpus.c_str(), FLAGS_comm_cpus.c_str());
        std::printf("alone: medians, slowest rank (rank 0 in brackets); pairs: medians over reps of the slowest rank\n");
        std::printf("%-22s %10s %10s %10s %10s %10s\n", "measure", "ms", "min", "q1", "q3", "max");
        std::printf("%-22s %10.3f   [%.3f]\n", "compute alone", m.compute_max_s * 1e3, m.compute_s * 1e3);
        std::printf("%-22s %10.3f   [%.3f]\n", "communication alone", m.communication_max_s * 1e3,
                    m.communication_s * 1e3);
        std::printf("%-22s %10.3f %10.3f %10.3f %10.3f %10.3f\n", "serial", m.serial_s * 1e3, m.serial_min_s * 1e3,
                    m.serial_q1_s * 1e3, m.serial_q3_s * 1e3, m.serial_max_s * 1e3);
        std::printf("%-22s %10.3f %10.3f %10.3f %10.3f %10.3f\n", "overlapped", m.overlapped_s * 1e3,
                    m.overlapped_min_s * 1e3, m.overlapped_q1_s * 1e3, m.overlapped_q3_s * 1e3,
                    m.overlapped_max_s * 1e3);
        std::printf("%-22s %10.3f   (rank 0; communication includes waits for slower ranks)\n",
                    "in serial: compute", m.serial_compute_s * 1e3);
        std::printf("%-22s %10.3f\n", "in serial: comm", m.serial_communication_s * 1e3);
        std::printf("overlapped/serial %.3f (paired %.3f)  overlapped/max(compute,comm) %.3f  efficiency %.3f "
                    "(paired %.3f)\n",
                    m.overlapped_s / m.serial_s, m.ratio_paired, m.overlapped_over_longer(), m.efficiency(),
                    m.efficiency_paired());
        std::fputs(phases.c_str(), stdout);
      }
    }
    world->barrier();
  } catch (const Error& e) {
    std::fprintf(stderr, "sy-overlap-perf: %s\n", e.what());
    return 2;
  }
  return 0;
}
