// pipeline_fb_measure_rank: measure_fb_overlap's alone passes and trace on 2 ranks (sy-run).
//
// Checks, on every rank:
//   - re-running a finished pair's tasks as the alone passes do (the four collectives, then
//     the eight compute sub-steps) leaves its outputs bitwise unchanged: y of the forward, gx
//     of the backward, and the weight gradients (equal to those of a second stage that ran
//     the same pair once);
//   - measure_fb_overlap with a trace returns every rank's serial and overlapped pair of
//     every rep (2 ranks x 2 modes x reps), each with 8 sub-steps and 4 collectives whose
//     CommWorker times are ordered posted <= started <= finished inside the pair, and the
//     per-rank totals of fb_phase_report add up: serial compute + comm = the sub-step sums.
#include <cmath>
#include <cstdio>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/pipeline/fb_overlap_report.h"
#include "switchyard/pipeline/synthetic_moe.h"

using namespace switchyard;
using namespace switchyard::pipeline;

namespace {

struct PairOutputs {
  std::vector<float> y, gx, grad_attn, grad_experts;
};

// Forward of mb 0, then the pair (forward mb 1 || backward mb 0) serially; rerun: the alone passes.
PairOutputs run_pair(SyntheticMoeStage& stage, const SyntheticMoeOptions& opt, int rank, bool rerun) {
  const int n = opt.tokens * opt.hidden;
  std::vector<float> x(n), gy(n), y0(n);
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(std::sin(0.3 * i + rank));
    gy[i] = static_cast<float>(std::cos(0.7 * i - rank));
  }
  PairOutputs out;
  out.y.assign(n, 0.0f);
  out.gx.assign(n, 0.0f);
  auto f0 = stage.forward_tasks(0, x.data(), y0.data());
  run_serial(f0, nullptr);
  auto f = stage.forward_tasks(1, x.data(), out.y.data());
  auto b = stage.backward_tasks(0, gy.data(), out.gx.data());
  run_serial(f, nullptr);
  run_serial(b, nullptr);
  if (rerun) {
    for (SubStepTask* t : {&f[1], &f[3], &b[0], &b[2]}) t->start()();
    for (SubStepTask* t : {&f[0], &f[2], &b[1], &b[3]}) t->run();
  }
  stage.weight_grads(0);
  out.grad_attn = stage.grad_attn;
  out.grad_experts = stage.grad_experts;
  return out;
}

}  // namespace

int main() {
  try {
    auto world = comm::Communicator::init();
    SY_REQUIRE(world->size() == 2, "pipeline_fb_measure_rank needs 2 ranks");
    const int rank = world->rank();
    SyntheticMoeOptions opt;
    opt.tokens = 12;
    opt.hidden = 8;
    opt.experts = 4;
    opt.top_k = 2;

    auto worker = std::make_shared<CommWorker>();
    auto buffer = SyntheticMoeStage::make_buffer(world, opt);
    SyntheticMoeStage once(0, buffer, rank, 2, opt), twice(0, buffer, rank, 2, opt);
    once.set_comm_worker(worker);
    twice.set_comm_worker(worker);
    const PairOutputs a = run_pair(once, opt, rank, false);
    const PairOutputs b = run_pair(twice, opt, rank, true);
    SY_REQUIRE(a.y == b.y, "rank " << rank << ": the forward output changed when the pair's tasks ran again");
    SY_REQUIRE(a.gx == b.gx, "rank " << rank << ": the input gradient changed when the pair's tasks ran again");
    SY_REQUIRE(a.grad_attn == b.grad_attn && a.grad_experts == b.grad_experts,
               "rank " << rank << ": the weight gradients changed when the pair's tasks ran again");

    const int reps = 5;
    std::vector<FbPairTrace> trace;
    OverlapMeasurement m = measure_fb_overlap(world, opt, reps, 1, worker, &trace);
    SY_REQUIRE(m.serial_s > 0 && m.overlapped_s > 0 && m.compute_s > 0 && m.communication_s > 0,
               "rank " << rank << ": a measured time is not positive");
    SY_REQUIRE(m.compute_max_s >= m.compute_s && m.communication_max_s >= m.communication_s,
               "rank " << rank << ": the max over ranks is below this rank's time");
    SY_REQUIRE(trace.size() == 2u * 2u * reps, "rank " << rank << ": trace has " << trace.size() << " pairs");
    int per_rank[2] = {0, 0};
    for (const FbPairTrace& t : trace) {
      SY_REQUIRE(t.rank >= 0 && t.rank < 2 && t.events.size() == 8 && t.collectives.size() == 4,
                 "rank " << rank << ": malformed pair of rank " << t.rank);
      ++per_rank[t.rank];
      for (const auto& c : t.collectives)
        SY_REQUIRE(t.begin <= c.times.posted && c.times.posted <= c.times.started &&
                       c.times.started <= c.times.finished && c.times.finished <= t.end,
                   "rank " << rank << ": collective times of rank " << t.rank << " rep " << t.rep
                           << " are out of order");
    }
    SY_REQUIRE(per_rank[0] == 2 * reps && per_rank[1] == 2 * reps, "rank " << rank << ": pairs per rank differ");
    std::vector<FbRankPhases> totals;
    fb_phase_report(trace, &totals);
    SY_REQUIRE(totals.size() == 2, "rank " << rank << ": report has " << totals.size() << " ranks");
    for (const FbRankPhases& p : totals)
      SY_REQUIRE(p.serial_peers_s <= p.serial_comm_s + 1e-9 && p.exposed_peers_s <= p.exposed_s + 1e-9,
                 "rank " << rank << ": a part exceeds its whole for rank " << p.rank);
    world->barrier();
    if (rank == 0) std::printf("pipeline_fb_measure_rank: OK\n");
  } catch (const Error& e) {
    std::fprintf(stderr, "pipeline_fb_measure_rank: %s\n", e.what());
    return 1;
  }
  return 0;
}
