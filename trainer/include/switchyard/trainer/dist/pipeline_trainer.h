// PipelineTrainer: one DeepSeek-V3 training step over EP x PP x DP ranks, the decoder
// layers cut into pipeline stages that a generated schedule (1F1B, ZB-H1, ZBV, DualPipeV,
// ...) runs through the pipeline executor.
//
// Stages. The schedule has S stages (P for 1F1B, 2P for the V shapes); the L main decoder
// layers plus the D MTP layers are cut into S contiguous ranges (unit u of L + D goes to
// stage u * S / (L + D)); stage 0 also runs the embedding, stage S-1 the final norm, the
// head and the MTP modules (which read the embedding too). In the V schedules the pipeline
// rank 0 holds stages 0 and S-1, so the embedding, head and MTP share one rank as in V3;
// otherwise (1F1B) the last stage keeps a copy of the embedding whose gradient is summed
// into the first stage's and whose value is broadcast back after each update.
//
// One step, per rank (pipeline index = its rank in the PP group, schedule rank):
//   1. its data slice of every micro-batch: micro-batch m is rows [m * G/M, (m+1) * G/M) of
//      the global batch G, and data rank r takes rows r * b .. (r+1) * b - 1 of it,
//      b = G / (M * ep * dp);
//   2. the executor runs the schedule: forward / backward-input / backward-weight of each
//      (stage, micro-batch) on one model copy per micro-batch (the master and M - 1 copies
//      whose parameters are refreshed from it each step), activations and gradients
//      travelling to the neighbour stages over the PP group; MoE layers move tokens with
//      DispatchedExperts over one dispatch::Buffer of the EP group;
//   3. gradients of the held parameters summed over the copies / M (gradient accumulation),
//      the shared embedding summed over the PP ranks holding it, then GradientSync (non-expert
//      over EP x DP, experts over DP, / ep * dp) and its global clip (every parameter once,
//      summed over PP), AdamW; with DistOptions::zero1 ShardedAdamW over the stage's
//      parameters instead (reduce-scatter, clip, shard update, all-gather);
//   4. the aux-loss-free bias update of the held MoE layers from counts summed over every
//      micro-batch and data rank.
// The FB pairs of the schedule (DualPipeV's steady phase) run under FbOverlap: the backward
// of one micro-batch and the forward of the other take turns computing, each one's MoE
// dispatch/combine travelling while the other computes (PipelineOptions::fb_overlap).
// DualPipe (two directions, each stage on pipeline ranks r and P-1-r): micro-batch m runs
// its path's copy; the executor's REDUCE sums each stage's gradients (FP64, over the
// micro-batch copies, then over the two ranks), the embedding goes through the PP sum,
// load counts are summed over the pair, and the norm counts each stage once (ranks r < P/2).
// Both copies then take the same AdamW step, so they stay equal.
//
// Collective: every rank calls every method in the same order. Not thread-safe. Owns its
// models, optimizer, dispatch buffer and executor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/pipeline/executor.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/trainer/dist/dist_trainer.h"
#include "switchyard/trainer/dist/dispatched_experts.h"
#include "switchyard/trainer/dist/fb_overlap.h"
#include "switchyard/trainer/dist/grad_sync.h"
#include "switchyard/trainer/dist/parallel_layout.h"
#include "switchyard/trainer/dist/sharded_adamw.h"
#include "switchyard/trainer/dist/step_trace.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::dist {

struct PipelineOptions {
  DistOptions dist;  // layout (any pp >= 1), wire, AdamW, clip, seed, fp8, zero1
  pipeline::ScheduleKind schedule = pipeline::ScheduleKind::kDualPipeV;
  int microbatches = 2;  // per step; valid counts depend on the schedule (generate())
  // FB pairs of the schedule overlap one micro-batch's dispatch/combine with the other's
  // compute (fb_overlap.h); false: forward, then backward. Same results either way.
  bool fb_overlap = true;
};

// The decoder layers of one pipeline stage.
struct StagePlan {
  int stage = 0;
  int64_t first = 0, last = 0;  // main layers [first, last)
  bool embed = false;           // stage 0
  bool head = false;            // stage S-1: final norm, head, MTP modules
};

// Cuts L main layers and D MTP layers into num_stages stages (see above).
std::vector<StagePlan> plan_stages(const ModelConfig& config, int num_stages);

class PipelineTrainer {
 public:
  PipelineTrainer(std::shared_ptr<comm::Communicator> world, const ModelConfig& config, PipelineOptions options);
  ~PipelineTrainer();
  PipelineTrainer(const PipelineTrainer&) = delete;
  PipelineTrainer& operator=(const PipelineTrainer&) = delete;

  const ParallelGroups& groups() const { return groups_; }
  const pipeline::Schedule& schedule() const { return schedule_; }
  // This rank's stages (data-flow order).
  const std::vector<StagePlan>& stages() const { return mine_; }
  // The master model: parameters of this rank's stages are current (others unused).
  Model<float>& model() { return *models_[0]; }
  StepTrace& trace() { return *trace_; }
  // The FB overlap runner (nullptr before the first step or with fb_overlap off).
  const FbOverlap* overlap() const { return overlap_.get(); }
  const dispatch::Buffer* buffer() const { return buffer_.get(); }
  int64_t steps_done() const { return steps_; }
  // GEMMs run through the FP8 recipe so far on this rank (0 without DistOptions::fp8).
  int64_t fp8_gemms() const;

  // global_tokens: [global_batch, seq + D + 1] int64, identical on every rank; global_batch
  // divisible by microbatches * ep * dp (InvalidArgument otherwise).
  DistStepMetrics step(const int64_t* global_tokens, int64_t global_batch, int64_t seq, double lr, double bias_rate);
  // Gradient accumulation over `accum` rounds of the schedule: global_tokens is
  // [accum * global_batch, seq + D + 1], round a runs rows [a * global_batch, (a+1) *
  // global_batch) split as in step(); one update with the mean gradient of all accum * M
  // micro-batches (as one process with accum * M micro-batches).
  DistStepMetrics step_accumulated(const int64_t* global_tokens, int64_t accum, int64_t global_batch, int64_t seq,
                                   double lr, double bias_rate);

  // Every parameter and router bias, each taken from a rank that holds it (collective).
  TensorMap gather_weights();

  // Sharded checkpoint in folder `dir` (collective; sharded_checkpoint.h): each rank writes
  // the parameters, router biases and AdamW moments it is the holder of (the rank
  // gather_weights takes them from: its stage's pipeline rank, EP rank of the expert, DP and
  // (non-expert) EP index 0); rank 0 writes meta.json {step, layout, schedule,
  // microbatches, extra}. Written to dir + ".tmp" and renamed when every rank is done.
  void save_sharded(const std::string& dir, const std::string& extra_json);
  // Restores parameters, biases, moments and the step count from a sharded checkpoint of the
  // same model (any layout, with or without stages or ZeRO-1: every rank reads every file).
  // Bitwise continuation on the same layout. Returns meta.json's "extra" text. Throws
  // IoError / InvalidArgument naming the file.
  std::string load_sharded(const std::string& dir);

  // The executor's measured timeline of the last step of the first pipeline replica (EP
  // and DP index 0): F/B/W chunks with their real stage and micro-batch, P2P transfers with
  // send-to-receive arrows, the overlapped FB pairs' sub-steps (compute stretches of each
  // micro-batch, its dispatch/combine on an EP lane), one Chrome/Perfetto file written by
  // world rank 0. Collective.
  void write_pipeline_trace(const std::string& path);

 private:
  bool holds(const Parameter<float>& p) const;  // a parameter of this rank's stages that it updates
  int holder_rank(const std::string& name) const;  // world rank to take `name` from
  void ensure_buffer(int64_t tokens_per_rank);
  void ensure_executor(size_t activation_elems);
  // FP32 staging of one chunk's activations; one per lane of an overlapped pair.
  struct Staging {
    std::vector<float> in, out;  // [rows * seq, hidden]
  };
  void forward_chunk(int stage, int mb, const double* in, double* out, Staging& st);
  void backward_input_chunk(int stage, int mb, const double* grad_out, double* grad_in, Staging& st);
  void backward_weight_chunk(int stage, int mb);
  void refresh_copies();
  // Held gradients of the master = sum over the copies (and rounds) / num_microbatches.
  void accumulate_copies(double num_microbatches);
  int stage_of(const std::string& name) const;  // the stage a parameter (or "model.layers.<l>.") belongs to
  bool runs_here(int stage, int mb) const;       // this pipeline rank runs (stage, mb)

  PipelineOptions options_;
  ModelConfig config_;
  ParallelGroups groups_;
  pipeline::Schedule schedule_;
  std::vector<StagePlan> plan_;  // all stages
  std::vector<StagePlan> mine_;  // this rank's
  std::vector<std::unique_ptr<Model<float>>> models_;  // [microbatches], 0 = master
  std::vector<int> held_;        // indices into parameters().all() updated by this rank
  std::vector<int64_t> held_moe_;  // MoE layers of this rank's stages
  bool shares_embedding_ = false;  // embedding on two pipeline ranks (first and last stage)
  // DualPipe: each stage on two pipeline ranks (r and P-1-r), one per direction.
  bool mirrored_ = false;
  std::shared_ptr<comm::Communicator> mirror_;    // {r, P-1-r}: load counts
  std::map<int, std::vector<int>> mirror_params_;  // stage -> held parameters (no embedding)
  std::map<int, std::vector<double>> mirror_buf_;  // stage -> gradients summed by REDUCE
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<ShardedAdamW> zero_;  // with DistOptions::zero1 (then optimizer_ is unused)
  std::unique_ptr<GradientSync> sync_;
  std::shared_ptr<dispatch::Buffer> buffer_;
  std::unique_ptr<pipeline::Executor> executor_;
  size_t activation_elems_ = 0;
  std::unique_ptr<StepTrace> trace_;
  int64_t steps_ = 0;
  // State of the running step, read by the executor callbacks.
  std::vector<Losses> mb_losses_;  // [microbatches] head losses of this rank's last stage
  Staging staging_[2];  // [0]: plain chunks and a pair's forward, [1]: a pair's backward
  std::unique_ptr<FbOverlap> overlap_;  // when options_.fb_overlap
  class Fp8Copies;
  std::unique_ptr<Fp8Copies> fp8_;  // with DistOptions::fp8: the recipe on every model copy
};

}  // namespace switchyard::trainer::dist
