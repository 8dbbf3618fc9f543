// Per-operation costs measured on this machine, turned into a cluster description that the
// planner reads with the same formulas it uses for the GPU clusters (docs/plan.md, "CPU
// calibration").
//
// calibrate_cpu() times, on the tokens of one micro-batch (spec.micro_batch x spec.seq_len):
// - cblas_sgemm at every distinct GEMM shape of the model in its three passes (forward,
//   input gradient, weight gradient; routed experts with M = tokens x EP x K / E rows)
//   -> gemm_shapes (fp32);
// - the CPU trainer's causal attention core (blocked score GEMMs, softmax, P V and its
//   backward, the loop of trainer/src/mla.cc) -> attention_fwd_tflops / attention_bwd_tflops;
// - each element-wise op of the planner's op list with the trainer's own kernels (RMSNorm,
//   RoPE, SwiGLU, router and top-k, permute/combine, cross-entropy, residuals, embedding)
//   -> elementwise_gbps[op] = the planner's bytes for the op / measured seconds;
// - the kept activations of a micro-batch allocated anew (zero-initialised tensors, freed)
//   -> first_touch_gbps (the CPU trainer allocates its activations every step);
// - the trainer's optimizer pass (zero_grad + clip_grad_norm + AdamW over the whole model)
//   -> optimizer_gbps; with a world of ep x dp ranks (pp 1) DistTrainer's own pieces:
//   GradientSync::reduce -> collective_gbps["all_reduce"], GradientSync::clip + AdamW +
//   zero_grad -> optimizer_gbps (other worlds: a plain comm all_reduce);
// - with ep > 1: one MoE layer's expert exchange through dispatch::Buffer over the EP group
//   (consecutive ranks) as the trainer's DispatchedExperts runs it (dispatch, weighted
//   combine, combine_backward, dispatch_backward, FP32 wire copies)
//   -> collective_gbps["all_to_all"].
//   Collective rates are in the planner's bytes (its ring and all-to-all formulas), so the
//   planner gives back the measured time for the measured layout.
// Every rank measures at the same time (the multi-rank run shares caches and memory
// bandwidth the same way); each cost is the maximum over ranks (the step waits for the
// slowest). Each cost is the median of `reps` samples after one warm-up call; a sample
// repeats the op for at least min_sample_s seconds, so that on a loaded machine it sees
// the same share of the cores as a training step does (a single short call would often
// run between two preemptions and look faster than the op runs inside a step). With
// cpu_clock the times are process CPU seconds instead of wall seconds: the rates then
// predict the CPU time of a step, which the load of other jobs on the machine changes
// little (bench/plan_calibration.sh compares both).
//
// Blocking, collective over `world` when it is given (every rank calls with the same
// arguments). Sets OpenBLAS to one thread. Seconds per call: a few on the tiny preset.
#pragma once

#include <memory>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/plan/cluster.h"
#include "switchyard/trainer/plan/planner.h"

namespace switchyard::trainer::plan {

// base: the cluster file to refine (its unmeasured fields and sources are kept).
// Throws InvalidArgument when the recipe is not fp32 (the CPU trainer's), reps < 1 or
// min_sample_s < 0.
ClusterSpec calibrate_cpu(const ClusterSpec& base, const TrainingSpec& spec, const Layout& layout,
                          const std::shared_ptr<comm::Communicator>& world = nullptr, int reps = 5, double min_sample_s = 0.05,
                          bool cpu_clock = false);

}  // namespace switchyard::trainer::plan
