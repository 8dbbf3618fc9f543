// Two-rank check of sy-plan's CPU calibration (run under sy-run -n 2): with EP 2 the
// collectives are measured through the distributed trainer's own pieces (GradientSync and
// the dispatch::Buffer path), with DP 2 through GradientSync and no expert exchange. Every
// measured rate is finite and positive, both ranks get the same cluster description (the
// max over ranks), and the description reads back (every field has its source).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/plan/calibrate.h"
#include "switchyard/trainer/plan/cluster.h"

namespace plan = switchyard::trainer::plan;

namespace {

int failures = 0;

void check(bool ok, const std::string& what, int rank) {
  if (ok) return;
  std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
  ++failures;
}

bool positive(double x) { return std::isfinite(x) && x > 0; }

}  // namespace

int main() {
  auto world = switchyard::comm::Communicator::init();
  const int rank = world->rank();
  check(world->size() == 2, "world of 2 ranks", rank);
  plan::TrainingSpec s;
  s.model = switchyard::trainer::model_config_preset("nano");
  s.seq_len = 32;
  s.micro_batch = 1;
  s.global_batch = 2;
  s.mtp_depth = 1;
  s.recipe = plan::precision_recipe("fp32");
  plan::ClusterSpec base = plan::cluster_from_file(std::string(SY_CLUSTERS_DIR) + "/cpu-2core.json");
  base.gpus_per_node = 2;
  for (const auto& [ep, dp] : {std::pair{2, 1}, std::pair{1, 2}}) {
    plan::Layout l;
    l.pp = 1, l.ep = ep, l.dp = dp, l.zero1 = false, l.schedule = "1f1b", l.comm_sms = 0;
    const std::string tag = "ep " + std::to_string(ep) + " dp " + std::to_string(dp) + ": ";
    const plan::ClusterSpec c = plan::calibrate_cpu(base, s, l, world, 1, 0.0);
    check(positive(c.optimizer_gbps), tag + "optimizer_gbps > 0", rank);
    check(positive(c.first_touch_gbps), tag + "first_touch_gbps > 0", rank);
    check(c.collective_gbps.count("all_reduce") && positive(c.collective_gbps.at("all_reduce")),
          tag + "all_reduce rate measured", rank);
    check((ep > 1) == (c.collective_gbps.count("all_to_all") == 1), tag + "all_to_all measured iff ep > 1", rank);
    if (ep > 1) check(positive(c.collective_gbps.at("all_to_all")), tag + "all_to_all rate > 0", rank);
    // The same description on both ranks: compare rank 0's rates with this rank's.
    double mine[2] = {c.optimizer_gbps, c.collective_gbps.at("all_reduce")}, lead[2] = {mine[0], mine[1]};
    world->broadcast(lead, 2, switchyard::comm::DataType::kFloat64, 0);
    check(lead[0] == mine[0] && lead[1] == mine[1], tag + "same rates on every rank", rank);
    try {
      plan::cluster_from_json(plan::cluster_to_json(c));
    } catch (const std::exception& e) {
      check(false, tag + "description reads back: " + e.what(), rank);
    }
  }
  world->barrier();
  if (failures == 0 && rank == 0) std::printf("mp_calibrate_check: OK\n");
  return failures == 0 ? 0 : 1;
}
