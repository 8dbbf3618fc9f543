// sy-overlap-perf: overlap of MoE dispatch/combine with compute in F&B pairs, on CPU ranks.
//
// Every rank runs a synthetic MoE layer (pipeline::SyntheticMoeStage: a dense stand-in for
// attention, experts as GEMVs, tokens moved by dispatch::Buffer over the EP group = all
// ranks). One measurement is an F&B pair: the forward of one micro-batch and the backward
// of another, run
//   serial:      the same sub-steps, each dispatch/combine waited for right after it is posted;
//   overlapped:  DeepSeek-V3 figure 4 order, each collective of one micro-batch in flight
//                while the other micro-batch computes (pipeline::run_overlapped_pair).
// compute and communication are the summed compute and collective sub-step times of the
// serial run. Efficiency = (serial - overlapped) / min(compute, communication).
// Medians over --reps pairs (after --warmup). Run with sy-run: sy-run -n 2 -- sy-overlap-perf
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
DEFINE_int32(reps, 7, "measured pairs (median reported)");
DEFINE_int32(warmup, 2, "unmeasured pairs first");
DEFINE_bool(json, false, "print JSON");

using namespace switchyard;
using namespace switchyard::pipeline;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("overlap of MoE dispatch/combine with compute; run under sy-run");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    auto world = comm::Communicator::init();
    SyntheticMoeOptions opt;
    opt.tokens = FLAGS_tokens;
    opt.hidden = FLAGS_hidden;
    opt.experts = FLAGS_experts;
    opt.top_k = FLAGS_top_k;
    opt.compute_repeat = FLAGS_compute_repeat;
    SY_REQUIRE(FLAGS_reps >= 5, "--reps = " << FLAGS_reps << " must be >= 5 (medians of at least 5)");
    auto buffer = SyntheticMoeStage::make_buffer(world, opt);
    SyntheticMoeStage stage(0, buffer, world->rank(), world->size(), opt);
    const size_t n = static_cast<size_t>(opt.tokens) * opt.hidden;
    std::vector<float> x(n), y(n), y2(n), gy(n), gx(n);
    for (size_t i = 0; i < n; ++i) {
      x[i] = 0.001f * static_cast<float>(i % 997) - 0.5f;
      gy[i] = 0.002f * static_cast<float>(i % 991) - 1.0f;
    }
    std::vector<double> serial, overlapped, compute, communication;
    int mb = 0;
    for (int rep = 0; rep < FLAGS_warmup + FLAGS_reps; ++rep) {
      for (int mode = 0; mode < 2; ++mode) {
        const int a = mb++, b = mb++;
        auto fa = stage.forward_tasks(a, x.data(), y.data());
        run_serial(fa, nullptr);  // micro-batch a needs a forward before its backward
        world->barrier();
        auto f = stage.forward_tasks(b, x.data(), y2.data());
        auto bw = stage.backward_tasks(a, gy.data(), gx.data());
        std::vector<SubStepEvent> ev;
        const double t0 = monotonic_seconds();
        if (mode == 0) {
          run_serial(f, &ev);
          run_serial(bw, &ev);
        } else {
          run_overlapped_pair(f, bw, &ev);
        }
        const double t = monotonic_seconds() - t0;
        stage.weight_grads(a);
        auto bb = stage.backward_tasks(b, gy.data(), gx.data());
        run_serial(bb, nullptr);
        stage.weight_grads(b);
        if (rep < FLAGS_warmup) continue;
        if (mode == 0) {
          serial.push_back(t);
          double c = 0, m = 0;
          for (const auto& e : ev) (e.collective ? m : c) += e.end - e.start;
          compute.push_back(c);
          communication.push_back(m);
        } else {
          overlapped.push_back(t);
        }
      }
    }
    const double s = median(serial), o = median(overlapped), c = median(compute), m = median(communication);
    const double eff = (s - o) / std::max(1e-12, std::min(c, m));
    if (world->rank() == 0) {
      if (FLAGS_json) {
        nlohmann::json j = {{"ranks", world->size()}, {"tokens", opt.tokens}, {"hidden", opt.hidden},
                            {"experts", opt.experts}, {"top_k", opt.top_k}, {"compute_repeat", opt.compute_repeat},
                            {"reps", FLAGS_reps},     {"serial_s", s},      {"overlapped_s", o},
                            {"compute_s", c},         {"communication_s", m}, {"overlapped_over_serial", o / s},
                            {"overlapped_over_longer", o / std::max(c, m)}, {"efficiency", eff}};
        std::cout << j.dump(2) << "\n";
      } else {
        std::printf("ranks %d tokens %d hidden %d experts %d top_k %d compute_repeat %d reps %d (medians)\n",
                    world->size(), opt.tokens, opt.hidden, opt.experts, opt.top_k, opt.compute_repeat, FLAGS_reps);
        std::printf("%-14s %12s\n", "measure", "ms");
        std::printf("%-14s %12.3f\n", "serial", s * 1e3);
        std::printf("%-14s %12.3f\n", "overlapped", o * 1e3);
        std::printf("%-14s %12.3f\n", "compute", c * 1e3);
        std::printf("%-14s %12.3f\n", "communication", m * 1e3);
        std::printf("overlapped/serial %.3f  overlapped/max(compute,comm) %.3f  efficiency %.3f\n", o / s,
                    o / std::max(c, m), eff);
      }
    }
    world->barrier();
  } catch (const Error& e) {
    std::fprintf(stderr, "sy-overlap-perf: %s\n", e.what());
    return 2;
  }
  return 0;
}
