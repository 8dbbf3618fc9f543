// run_distributed_training: the sy-train job on many ranks (DP x EP today).
//
// Every rank builds the same tokenizer and data stream and reads the same global batch of
// TrainOptions::batch windows per step; DistTrainer gives each data rank its slice. Rank 0
// prints the progress lines (same format as the one-process run) and writes the JSONL log,
// the Perfetto trace and the SVG timeline of the traced steps; at the end it samples text
// from the gathered model. The time budget is decided on rank 0 and broadcast, so every
// rank stops at the same step.
//
// Checkpoints (TrainOptions::ckpt_dir): sharded (DistTrainer::save_sharded) into
// ckpt_dir/step-<N> every ckpt_every steps and at the end; with resume, the run continues
// from the newest one (any layout), data position included.
//
// TrainOptions::grad_accum micro-batches of the global batch make one step
// (DistTrainer::step_micro_batches); TrainOptions::fp8 runs the Linear GEMMs through the FP8
// recipe emulation (DistOptions::fp8); checkpoints work with and without zero1.
//
// Collective over world: call on every rank. Throws Unsupported for options this path does
// not implement yet and InvalidArgument for bad layouts. A failed peer makes the collectives throw (comm timeout
// or PeerFailure naming the rank); the caller exits non-zero.
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/trainer/dist/dist_trainer.h"
#include "switchyard/trainer/train/trainer.h"

namespace switchyard::trainer::dist {

struct DistRunOptions {
  ParallelLayout layout;
  ExpertWire wire = ExpertWire::kFp8Bf16;
  std::string schedule = "1f1b";  // pipeline schedule (used when layout.pp > 1)
  int64_t microbatches = 1;       // pipeline micro-batches per step
  bool zero1 = false;             // ZeRO-1 optimizer (DistOptions::zero1)
  int64_t log_every = 10;
  bool resume = false;            // continue from the newest checkpoint in ckpt_dir
  std::string jsonl_path;
  double time_budget_s = 0;       // > 0: stop when the next step would exceed it
  std::string trace_path;         // Perfetto/Chrome trace JSON (rank 0), empty: none
  std::string timeline_path;      // SVG timeline (rank 0), empty: none
  int64_t trace_steps = 4;        // steps recorded (the last ones before the end)
  std::string sample_prompt;      // empty: no sample
  int64_t sample_tokens = 80;
  double sample_temperature = 0;  // 0: greedy
  int64_t sample_top_k = 0;
};

struct DistRunResult {
  int64_t steps = 0;
  double first_mean = 0;  // mean loss of the first min(20, steps) steps
  double last_mean = 0;   // of the last min(20, steps)
  double tokens_per_s = 0;  // median over the steps after the first
  StepBreakdown breakdown;  // over the traced steps
  std::string sample;       // rank 0
};

DistRunResult run_distributed_training(std::shared_ptr<comm::Communicator> world, const TrainOptions& train,
                                       const DistRunOptions& run, std::ostream& out);

}  // namespace switchyard::trainer::dist
