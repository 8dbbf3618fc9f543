// The training loop: model + data + AdamW + schedules + FP8 + checkpoints + metrics.
//
// One optimizer step = grad_accum micro-batches of `batch` windows of T + D + 1 tokens:
// forward, backward (gradients summed, then divided by grad_accum), global-norm clipping,
// AdamW with the scheduled learning rate, then the aux-loss-free bias update with the
// scheduled speed from the expert counts summed over the step's micro-batches. The MTP loss
// weight follows its schedule. A non-finite loss or gradient norm throws NonFiniteLoss,
// or skips the update (no parameter, moment or bias change) with skip_nonfinite.
// Resuming from a checkpoint continues bitwise identically (same threads, same binary).
//
// Not thread-safe. The Trainer owns its model, data, optimizer and (with fp8) installs the
// process-global FP8 Linear back-end for its lifetime.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>

#include "switchyard/common/error.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/train/checkpoint.h"
#include "switchyard/trainer/train/data.h"
#include "switchyard/trainer/train/linear_backend.h"
#include "switchyard/trainer/train/optimizer.h"
#include "switchyard/trainer/train/schedule.h"
#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer {

struct TrainOptions {
  std::string preset = "nano";   // used when config_path is empty
  std::string config_path;       // HF config.json
  std::string data;              // text file or folder
  std::string tokenizer = "bytes";
  int64_t steps = 100;
  int64_t batch = 8;             // windows per micro-batch
  int64_t seq = 64;              // T
  int64_t grad_accum = 1;
  int64_t mtp_depth = -1;        // D; -1 keeps the config's num_nextn_predict_layers
  double lr = 1e-3;
  int64_t warmup = 0;
  std::string lr_decay = "constant";  // or "cosine" (to min_lr at `steps`)
  double min_lr = 0;
  double clip = 1.0;
  double weight_decay = 0.1;
  std::string mtp_weight;        // StepSchedule text; empty keeps the config's lambda
  std::string bias_rate = "0.001";
  bool fp8 = false;
  bool fp8_pow2 = false;
  double init_std = 0.02;
  uint64_t seed = 1;              // initialization and RNG
  int64_t data_seed = -1;         // split and order of the data; -1: seed
  double val_fraction = 0.05;
  int64_t eval_every = 0;        // 0: no periodic evaluation
  int64_t eval_batches = 4;
  std::string ckpt_dir;          // empty: no checkpoints
  int64_t ckpt_every = 0;        // 0: only at the end
  int64_t keep = 3;
  bool skip_nonfinite = false;
  int64_t max_position = 0;      // > 0 overrides max_position_embeddings (generation length)

  // Throws InvalidArgument naming the first bad option.
  void validate() const;
};

// The model a run trains: the preset or config file, with the vocabulary of `tokenizer`, the
// MTP depth and the position range the options ask for; validated. Shared by the one-process
// Trainer and the distributed run so both build the same model from the same flags.
ModelConfig model_config_for(const TrainOptions& options, const Tokenizer& tokenizer);
// The data of a run: windows of seq + MTP depth + 1 tokens, the validation split and the
// data seed (the run seed unless data_seed is set).
DataOptions data_options_for(const TrainOptions& options, int64_t mtp_depth);

// A non-finite loss or gradient norm (the message names the step and the values).
class NonFiniteLoss : public Error {
 public:
  explicit NonFiniteLoss(std::string message) : Error(ErrorCode::kInvalidArgument, std::move(message)) {}
};

struct StepMetrics {
  int64_t step = 0;           // 1-based optimizer step just done
  double loss = 0;            // total loss, mean over micro-batches
  double main_loss = 0;
  double mtp_loss = 0;        // mean over MTP modules (0 without MTP)
  double balance = 0;
  double lr = 0;
  double grad_norm = 0;
  double max_over_mean_load = 0;  // worst MoE layer, last micro-batch
  double tokens_per_s = 0;
  double seconds = 0;
  bool skipped = false;
};

class Trainer {
 public:
  // Builds the tokenizer, data and model (random init from seed), or, when resume_from is
  // a checkpoint folder, restores the whole state from it.
  explicit Trainer(TrainOptions options);
  ~Trainer();

  // Restores model, optimizer, data position, RNG and step from a checkpoint folder. Throws
  // InvalidArgument when its config does not match this trainer's model.
  void restore(const std::string& folder);
  // Writes a checkpoint of the current state into options.ckpt_dir; returns the folder.
  std::string save_checkpoint();

  StepMetrics train_step();
  // Mean main-model cross-entropy over eval_batches validation batches.
  double evaluate();

  int64_t step() const { return step_; }
  const TrainOptions& options() const { return options_; }
  Model<float>& model() { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  TextDataset& data() { return *data_; }
  std::mt19937_64& rng() { return rng_; }

 private:
  Checkpoint make_checkpoint() const;

  TrainOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<TextDataset> data_;
  ModelConfig config_;
  std::unique_ptr<Model<float>> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Fp8Linear> fp8_;
  std::unique_ptr<CheckpointManager> checkpoints_;
  LrSchedule lr_;
  StepSchedule mtp_weight_, bias_rate_;
  std::mt19937_64 rng_;
  int64_t step_ = 0;
  std::vector<int64_t> tokens_;  // [batch, T + D + 1]
};

// The sy-train run: trains options.steps steps (from a checkpoint when resume is set),
// printing a progress line every `log_every` steps to `out` and one JSON object per step to
// `jsonl_path` (if not empty), evaluating every eval_every steps, checkpointing every
// ckpt_every steps and at the end. Returns the last step's metrics.
struct RunOptions {
  bool resume = false;          // from the latest checkpoint in ckpt_dir (if any)
  int64_t log_every = 10;
  std::string jsonl_path;
  double time_budget_s = 0;     // > 0: stop early when the next step would exceed it
};
StepMetrics run_training(Trainer& trainer, const RunOptions& run, std::ostream& out);

}  // namespace switchyard::trainer
