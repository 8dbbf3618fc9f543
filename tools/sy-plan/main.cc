// sy-plan: predicts memory per GPU and step time of a DeepSeek-V3-style training layout
// (docs/plan.md). Thin: flags -> TrainingSpec, ClusterSpec, Layout -> plan() or sweep().
#include <gflags/gflags.h>

#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/plan/calibrate.h"
#include "switchyard/trainer/plan/planner.h"

DEFINE_string(model, "v3", "model preset (nano, tiny, small, v3) or a Hugging Face config.json path");
DEFINE_int64(seq, 4096, "sequence length");
DEFINE_int64(batch, 15360, "global batch, sequences per optimizer step");
DEFINE_int64(micro_batch, 1, "sequences per micro-batch");
DEFINE_int32(mtp, 1, "MTP depth trained");
DEFINE_string(recipe, "fp8", "precision recipe: fp8 (DeepSeek-V3), bf16, fp32");
DEFINE_string(recompute, "norms,mla_up,swiglu",
              "recomputed in backward: comma list of norms, mla_up, swiglu, full; or none");
DEFINE_bool(fused_head_loss, true, "head + loss backward fused into the forward (no logits kept)");
DEFINE_string(cluster, "h800", "cluster file, or a name in trainer/clusters (h800, h100, h200, cpu-2core)");
DEFINE_int32(nodes, 0, "override the cluster's node count");
DEFINE_int32(gpus_per_node, 0, "override the cluster's GPUs (ranks) per node");
DEFINE_bool(calibrate, false,
            "CPU clusters: measure the model's operations here (GEMMs, attention, element-wise, optimizer; "
            "collectives when started by sy-run -n >1) and use those rates");
DEFINE_string(calibrate_out, "", "with --calibrate: write the measured cluster description to this file (rank 0)");
DEFINE_int32(calibrate_reps, 5, "with --calibrate: timed runs per operation (median)");
DEFINE_double(calibrate_sample_s, 0.05, "with --calibrate: each timed sample repeats an operation this long");
DEFINE_bool(calibrate_cpu_clock, false,
            "with --calibrate: time in process CPU seconds instead of wall seconds (predicts CPU time per step)");
DEFINE_int64(vocab, 0, "override the model's vocabulary size (sy-train's byte tokenizer: 256)");
DEFINE_int32(pp, 16, "pipeline-parallel ranks");
DEFINE_int32(ep, 64, "expert-parallel ranks");
DEFINE_int32(dp, 2, "data-parallel replicas of each expert");
DEFINE_bool(zero1, true, "shard master weights and moments over the replicas (ZeRO-1)");
DEFINE_string(schedule, "dualpipe", "1f1b, interleaved-1f1b, zb-h1, zbv, dualpipe, dualpipev");
DEFINE_int32(chunks, 2, "model chunks per rank (interleaved-1f1b)");
DEFINE_int32(microbatches, 0, "micro-batches per pipeline (0: batch / (ep dp micro_batch))");
DEFINE_int32(comm_sms, 20, "SMs reserved for communication");
DEFINE_bool(overlap_a2a, true, "DualPipe(V): hide a micro-batch's all-to-all under the paired one");
DEFINE_bool(overlap_dp_sync, false, "gradient reduce hidden under the backward");
DEFINE_bool(optimizer_full_model, false,
            "every rank updates all parameters of its stages, other ranks' experts included (the CPU sy-train "
            "without --zero1)");
DEFINE_bool(json, false, "one JSON object (or array with --sweep)");
DEFINE_bool(sweep, false, "rank the layouts that fit under --mem_cap");
DEFINE_double(mem_cap, 0, "memory cap per GPU in GiB for --sweep (0: the cluster's memory)");
DEFINE_string(schedules, "1f1b,zb-h1,dualpipe,dualpipev", "schedules tried by --sweep");
DEFINE_int32(top, 20, "layouts listed by --sweep");

namespace {

using namespace switchyard::trainer;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

plan::ClusterSpec load_cluster(const std::string& name) {
  std::string path = name;
  if (!std::filesystem::exists(path)) path = std::string(SY_CLUSTERS_DIR) + "/" + name + ".json";
  return plan::cluster_from_file(path);
}

int run() {
  plan::TrainingSpec spec;
  spec.model =
      std::filesystem::exists(FLAGS_model) ? model_config_from_file(FLAGS_model) : model_config_preset(FLAGS_model);
  if (FLAGS_vocab > 0) spec.model.vocab_size = FLAGS_vocab;
  spec.model.max_position_embeddings = std::max(spec.model.max_position_embeddings, FLAGS_seq);
  spec.seq_len = FLAGS_seq;
  spec.global_batch = FLAGS_batch;
  spec.micro_batch = FLAGS_micro_batch;
  spec.mtp_depth = FLAGS_mtp;
  spec.recipe = plan::precision_recipe(FLAGS_recipe);
  spec.recompute = plan::RecomputeOptions{false, false, false, false, FLAGS_fused_head_loss};
  for (const std::string& r : split(FLAGS_recompute)) {
    if (r == "norms")
      spec.recompute.norms = true;
    else if (r == "mla_up")
      spec.recompute.mla_up_proj = true;
    else if (r == "swiglu")
      spec.recompute.swiglu = true;
    else if (r == "full")
      spec.recompute.full = true;
    else if (r != "none")
      SY_THROW(InvalidArgument, "--recompute: unknown item \"" << r << "\"; valid: norms, mla_up, swiglu, full, none");
  }
  plan::ClusterSpec cluster = load_cluster(FLAGS_cluster);
  if (FLAGS_nodes > 0) cluster.nodes = FLAGS_nodes;
  if (FLAGS_gpus_per_node > 0) cluster.gpus_per_node = FLAGS_gpus_per_node;
  if (FLAGS_sweep) {
    SY_REQUIRE(!FLAGS_calibrate, "--calibrate measures one layout; it cannot be combined with --sweep");
    const double cap = FLAGS_mem_cap > 0 ? FLAGS_mem_cap : cluster.memory_gib;
    auto rs = plan::sweep(spec, cluster, cap, split(FLAGS_schedules), static_cast<size_t>(FLAGS_top));
    std::cout << (FLAGS_json ? plan::sweep_to_json(rs) + "\n" : plan::format_sweep(rs));
    return 0;
  }
  plan::Layout layout;
  layout.pp = FLAGS_pp;
  layout.ep = FLAGS_ep;
  layout.dp = FLAGS_dp;
  layout.zero1 = FLAGS_zero1;
  layout.schedule = FLAGS_schedule;
  layout.num_chunks = FLAGS_chunks;
  layout.microbatches = FLAGS_microbatches;
  layout.comm_sms = FLAGS_comm_sms;
  layout.overlap_a2a = FLAGS_overlap_a2a;
  layout.overlap_dp_sync = FLAGS_overlap_dp_sync;
  layout.optimizer_full_model = FLAGS_optimizer_full_model;
  if (FLAGS_calibrate) {
    // Under sy-run every rank measures at once and the collectives run over the world.
    std::shared_ptr<switchyard::comm::Communicator> world;
    if (switchyard::comm::LaunchEnv::detect().world_size > 1) world = switchyard::comm::Communicator::init();
    cluster = plan::calibrate_cpu(cluster, spec, layout, world, FLAGS_calibrate_reps,
                                   FLAGS_calibrate_sample_s, FLAGS_calibrate_cpu_clock);
    if (world && world->rank() != 0) return 0;
    if (!FLAGS_calibrate_out.empty()) {
      std::ofstream f(FLAGS_calibrate_out);
      f << plan::cluster_to_json(cluster);
      if (!f) SY_THROW(IoError, "--calibrate_out: cannot write \"" << FLAGS_calibrate_out << "\"");
    }
  }
  plan::PlanResult r = plan::plan(spec, cluster, layout);
  std::cout << (FLAGS_json ? plan::plan_to_json(r) + "\n" : plan::format_plan(r));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("memory and step-time plan of a training layout (docs/plan.md)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sy-plan: %s\n", e.what());
    return 2;
  }
}
