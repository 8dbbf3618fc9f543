// DistTrainer: one DeepSeek-V3 training step over DP x EP ranks (pipeline stages: see
// docs/distributed.md for what runs today).
//
// Every rank builds the full model from the same seed (the parameters it does not own stay
// untouched: experts of other EP ranks are never read, their gradients stay zero), installs
// a DispatchedExperts provider on every MoE layer (MTP included) over one dispatch::Buffer
// on its EP group, and per step:
//   1. takes its slice of the global batch: rows [data_rank * b, (data_rank + 1) * b) with
//      b = global_batch / (ep * dp);
//   2. forward and backward (experts computed where they live, tokens moved by dispatch);
//   3. GradientSync::reduce (non-expert over EP x DP, experts over DP), the global grad-norm
//      clip, AdamW on the parameters it owns; or, with zero1, ShardedAdamW (reduce-scatter,
//      sharded moments, all-gather of the parameters);
//   4. the aux-loss-free bias update from the load counts summed over all data ranks.
// With several micro-batches per step (gradient accumulation), 2. runs once per micro-batch
// (gradients summed, then divided by their number, as the one-process Trainer) before 3.
// With DistOptions::fp8 the Linear GEMMs run through the FP8 recipe emulation (Fp8Linear,
// installed process-wide for the trainer's lifetime), the experts' GEMMs on the dispatched
// rows included.
// With ExpertWire::kFloat32 the losses and parameters equal a one-process step on the
// whole global batch up to FP32 summation order.
//
// Collective: all ranks call every method in the same order. Not thread-safe. Owns its
// model, optimizer and dispatch buffer; keeps the world communicator alive.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/trainer/dist/dispatched_experts.h"
#include "switchyard/trainer/dist/grad_sync.h"
#include "switchyard/trainer/dist/parallel_layout.h"
#include "switchyard/trainer/dist/sharded_adamw.h"
#include "switchyard/trainer/dist/step_trace.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/safetensors.h"
#include "switchyard/trainer/train/linear_backend.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::dist {

struct DistOptions {
  ParallelLayout layout;
  ExpertWire wire = ExpertWire::kFp8Bf16;
  AdamWConfig adam;
  double clip = 1.0;          // global grad-norm clip (0 disables)
  uint64_t seed = 1;          // model init
  double init_std = 0.02;
  int64_t max_tokens_per_rank = 0;  // dispatch staging rows; 0 = sized at the first step
  bool zero1 = false;         // ZeRO-1: sharded optimizer state (ShardedAdamW)
  bool fp8 = false;           // FP8 recipe for the Linear GEMMs (train/linear_backend.h)
  bool fp8_pow2 = false;      // with fp8: power-of-two scales
};

struct DistStepMetrics {
  Losses losses;                  // means over the data ranks (= the global-batch losses)
  double grad_norm = 0;           // before clipping
  double max_over_mean_load = 0;  // worst MoE layer, global counts
  double seconds = 0;             // wall time of the step on this rank
  double grad_sync_seconds = 0;   // of which gradient all-reduce and norm
};

class DistTrainer {
 public:
  DistTrainer(std::shared_ptr<comm::Communicator> world, const ModelConfig& config, DistOptions options);
  ~DistTrainer();
  DistTrainer(const DistTrainer&) = delete;
  DistTrainer& operator=(const DistTrainer&) = delete;

  const ParallelGroups& groups() const { return groups_; }
  const DistOptions& options() const { return options_; }
  Model<float>& model() { return *model_; }
  // Measured timeline of the steps (enable it to record; collective gather/write).
  StepTrace& trace() { return *trace_; }
  // The MoE dispatch buffer (after the first step): uses_two_hop() etc.
  const dispatch::Buffer* buffer() const { return buffer_.get(); }
  int64_t steps_done() const { return steps_; }

  // global_tokens: [global_batch, seq + D + 1] int64, identical on every rank;
  // global_batch divisible by ep * dp. Throws InvalidArgument otherwise.
  DistStepMetrics step(const int64_t* global_tokens, int64_t global_batch, int64_t seq, double lr, double bias_rate);
  // One optimizer step over micro_batches global micro-batches (gradient accumulation):
  // global_tokens: [micro_batches, global_batch, seq + D + 1] int64, identical on every
  // rank. Losses are means over the micro-batches; the bias update uses the counts summed
  // over them. Equals the one-process Trainer with grad_accum = micro_batches.
  DistStepMetrics step_micro_batches(const int64_t* global_tokens, int64_t micro_batches, int64_t global_batch,
                                     int64_t seq, double lr, double bias_rate);
  // GEMMs run through the FP8 recipe so far on this rank (0 without DistOptions::fp8).
  int64_t fp8_gemms() const { return fp8_ ? fp8_->fp8_gemms() : 0; }

  // Every parameter and bias as in Model::weights(), routed experts taken from their owner
  // (broadcast over EP). Collective.
  TensorMap gather_weights();

  // Sharded checkpoint in folder `dir` (collective): each rank writes rank-<r>.safetensors
  // with the parameters it is the first holder of (non-expert: data rank 0; experts: DP
  // index 0 of their EP rank), their AdamW moments and the router biases; rank 0 writes
  // meta.json {step, layout, extra}. Written to dir + ".tmp" and renamed when every rank
  // is done. With zero1 every rank also writes its optimizer shard, as slices
  // "exp_avg.<name>@<first element>" (each moment element is held by exactly one rank).
  void save_sharded(const std::string& dir, const std::string& extra_json);
  // Restores parameters, biases, moments and the step count from a sharded checkpoint
  // written by any layout of the same model, with or without zero1 (every rank reads every
  // shard and reassembles each parameter's moments from the slices). Returns the
  // checkpoint's meta.json "extra" text. Throws IoError / InvalidArgument naming the file.
  std::string load_sharded(const std::string& dir);

 private:
  void ensure_buffer(int64_t tokens_per_rank);

  DistOptions options_;
  ParallelGroups groups_;
  std::unique_ptr<Model<float>> model_;
  std::unique_ptr<AdamW> optimizer_;      // without zero1
  std::unique_ptr<ShardedAdamW> zero_;    // with zero1
  std::unique_ptr<GradientSync> sync_;
  std::unique_ptr<Fp8Linear> fp8_;        // with fp8
  std::shared_ptr<dispatch::Buffer> buffer_;
  std::vector<int64_t> moe_layers_;
  std::unique_ptr<StepTrace> trace_;
  int64_t steps_ = 0;
};

}  // namespace switchyard::trainer::dist
