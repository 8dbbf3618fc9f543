// sy-plan's model: memory per GPU and step time of a training layout on a cluster.
//
// Step time = the pipeline simulator's makespan for the bottleneck stage's chunk durations
// (compute per op from cluster rates, exposed all-to-all, P2P) + the exposed data-parallel
// gradient synchronisation. Memory = weights, master, moments, gradients of the stages a
// rank holds, activations at the schedule's peak (simulator) and communication buffers.
// Nothing is fitted to an end-to-end figure: every rate comes from the cluster file.
//
// Constraints: plan() is a pure function (it runs the pipeline simulator and the router on
// random scores, deterministic); throws InvalidArgument naming the first input that does
// not fit (layout not dividing the model or the cluster, bad sizes). Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/plan/cluster.h"
#include "switchyard/trainer/plan/expert_traffic.h"
#include "switchyard/trainer/plan/op_costs.h"

namespace switchyard::trainer::plan {

struct TrainingSpec {
  ModelConfig model;
  int64_t seq_len = 4096;
  int64_t global_batch = 15360;  // sequences per optimizer step
  int64_t micro_batch = 1;  // sequences per micro-batch (per pipeline replica)
  int mtp_depth = 1;  // MTP modules trained (<= model.num_nextn_predict_layers not required)
  PrecisionRecipe recipe = precision_recipe("fp8");
  RecomputeOptions recompute;
};

struct Layout {
  int pp = 16;
  int ep = 64;  // EP group: routed experts split over ep ranks
  int dp = 2;  // replicas of each expert; non-expert params replicated over ep x dp
  bool zero1 = true;  // optimizer states (master, moments) sharded over replicas
  std::string schedule = "dualpipe";  // pipeline::parse_schedule_kind names
  int num_chunks = 2;  // interleaved-1f1b only
  int microbatches = 0;  // per pipeline replica per step; 0 = global_batch / (ep dp micro_batch)
  int comm_sms = 20;  // SMs reserved for communication (V3: 20 of 132)
  bool overlap_a2a = true;  // DualPipe(V): all-to-all of a micro-batch hidden under the paired one
  bool overlap_dp_sync = false;  // gradient reduce hidden under the last backward
  // Every rank keeps optimizer state for, and updates, all parameters of its stages, the
  // other ranks' experts included (the CPU DistTrainer without ZeRO-1 builds AdamW over the
  // whole model: trainer/src/dist/dist_trainer.cc). False: dense + its own experts.
  bool optimizer_full_model = false;
  std::string describe() const;  // "pp16 ep64 dp2 zero1 dualpipe mb120 sms20"
};

struct MemoryBreakdown {  // bytes per GPU, on the most loaded rank
  double weights_high = 0;  // BF16 (or FP32) working copy
  double weights_low = 0;  // FP8 copy of linear weights
  double master = 0;
  double moments = 0;
  double grads = 0;
  double activations = 0;  // at the schedule's peak
  double comm_buffers = 0;
  double total() const { return weights_high + weights_low + master + moments + grads + activations + comm_buffers; }
};

struct OpTime {
  std::string name;
  double seconds = 0;  // per step, on the bottleneck stage (forward + backward)
};

struct StepBreakdown {
  std::vector<OpTime> compute_ops;  // summed over the bottleneck stage's blocks
  double compute = 0;  // per step on the bottleneck rank
  double exposed_a2a = 0;
  double bubble = 0;  // makespan - busy of the bottleneck rank (P2P waits included)
  double dp_sync = 0;  // exposed gradient reduce + parameter gather
  double optimizer = 0;  // AdamW pass (memory bound)
  double step = 0;
};

struct PlanResult {
  TrainingSpec spec;
  Layout layout;
  std::string cluster;
  int num_gpus = 0;
  int num_stages = 0;
  std::vector<int> layers_per_stage;  // blocks (embedding, layers, heads) per pipeline stage
  int microbatches = 0;
  int peak_activation_chunks = 0;
  int parameter_copies = 1;
  ExpertTraffic traffic;
  double a2a_network_bytes_per_token = 0;  // per MoE layer, fwd + bwd, wire bytes
  double a2a_logical_bytes_per_token = 0;  // same, one copy per routed expert
  MemoryBreakdown memory;
  double memory_capacity = 0;  // bytes
  bool fits = false;
  StepBreakdown time;
  double tokens_per_step = 0;
  double tokens_per_second = 0;
  double model_flops_per_token = 0;  // 3 x forward FLOPs, causal attention, no recompute
  double mfu = 0;  // vs the dense peak of the linear GEMM precision
  double mfu_bf16 = 0;  // vs the dense BF16 peak
  double gpu_hours_per_trillion_tokens = 0;
};

PlanResult plan(const TrainingSpec& spec, const ClusterSpec& cluster, const Layout& layout);

// All layouts (pp, ep, dp, schedule, micro-batch size) using every GPU of the cluster that
// plan() accepts and whose memory is under mem_cap_gib, fastest first (at most max_results).
std::vector<PlanResult> sweep(const TrainingSpec& spec, const ClusterSpec& cluster, double mem_cap_gib,
                              const std::vector<std::string>& schedules, size_t max_results = 20);

// Text table and JSON of a result (stable field names; docs/plan.md).
std::string format_plan(const PlanResult& r);
std::string plan_to_json(const PlanResult& r);
std::string format_sweep(const std::vector<PlanResult>& rs);
std::string sweep_to_json(const std::vector<PlanResult>& rs);

}  // namespace switchyard::trainer::plan
