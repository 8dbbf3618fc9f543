// The sy-train loop shared by the EP x DP job (dist_run.cc, DistTrainer) and the pipeline
// job (pipeline_run.cc, PipelineTrainer): LR / MTP-weight / bias-rate schedules, the data
// stream (grad_accum global batches per step, read in order), the time budget (decided on
// rank 0, broadcast), progress lines and JSONL on rank 0, sharded checkpoints and --resume,
// the step trace and breakdown, and the closing sample from the gathered weights.
//
// Trainer is DistTrainer or PipelineTrainer (both: model(), trace(), steps_done(),
// buffer(), groups(), save_sharded, load_sharded, gather_weights). The caller constructs
// the trainer and prints its header; `step` runs one step on grad_accum * batch rows.
// Collective over world: every rank calls it. Private to trainer/src/dist.
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/trainer/dist/dist_run.h"
#include "switchyard/trainer/dist/sharded_checkpoint.h"
#include "switchyard/trainer/train/data.h"
#include "switchyard/trainer/train/generate.h"
#include "switchyard/trainer/train/schedule.h"
#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer::dist {

struct TrainingLoopHooks {
  // One step: tokens [grad_accum * batch, window] int64; returns the step's metrics.
  std::function<DistStepMetrics(const int64_t* tokens, double lr, double bias_rate)> step;
  std::string trace_title;  // of the trace / timeline files
  // After the breakdown and the trace files, before the weights are gathered (collective).
  std::function<void(DistRunResult&)> finish;
};

template <class Trainer>
DistRunResult run_training_loop(comm::Communicator& world, Trainer& trainer, const TrainOptions& train,
                                const DistRunOptions& run, const ModelConfig& config, const Tokenizer& tokenizer,
                                TextDataset& dataset, const TrainingLoopHooks& hooks, std::ostream& out) {
  const bool lead = world.rank() == 0;
  const int64_t D = config.num_nextn_predict_layers;
  LrSchedule lr;
  lr.peak = train.lr;
  lr.warmup_steps = train.warmup;
  lr.decay = parse_lr_decay(train.lr_decay);
  lr.total_steps = train.steps;
  lr.min_lr = train.min_lr;
  const StepSchedule mtp_weight =
      train.mtp_weight.empty() ? StepSchedule(config.mtp_loss_lambda) : StepSchedule::parse(train.mtp_weight);
  const StepSchedule bias_rate = StepSchedule::parse(train.bias_rate);

  std::ofstream jsonl;
  if (lead && !run.jsonl_path.empty()) {
    jsonl.open(run.jsonl_path, std::ios::app);
    if (!jsonl) SY_THROW(IoError, "distributed training: cannot write --log_jsonl \"" << run.jsonl_path << "\"");
  }

  int64_t first_step = 0;
  if (run.resume && !train.ckpt_dir.empty()) {
    const std::string latest = latest_sharded_checkpoint(train.ckpt_dir);
    if (!latest.empty()) {
      nlohmann::json extra = nlohmann::json::parse(trainer.load_sharded(latest));
      dataset.set_position({extra["epoch"].get<int64_t>(), extra["index"].get<int64_t>()});
      first_step = trainer.steps_done();
      if (lead) out << "resumed from " << latest << " at step " << first_step << "\n";
    } else if (lead) {
      out << "no checkpoint in " << train.ckpt_dir << "; starting from step 0\n";
    }
  }
  auto save = [&](int64_t step) {
    if (train.ckpt_dir.empty()) return;
    const std::string folder = train.ckpt_dir + "/step-" + std::to_string(step);
    if (lead) std::filesystem::create_directories(train.ckpt_dir);
    trainer.save_sharded(folder, nlohmann::json({{"epoch", dataset.position().epoch},
                                                 {"index", dataset.position().index}})
                                     .dump());
    if (lead) out << "checkpoint " << folder << "\n" << std::flush;
  };
  auto mean = [](const std::vector<double>& v, size_t begin, size_t end) {
    double s = 0;
    for (size_t i = begin; i < end; ++i) s += v[i];
    return end > begin ? s / double(end - begin) : 0;
  };

  // One step: grad_accum global batches, read in order (as one process).
  std::vector<int64_t> tokens(train.grad_accum * train.batch * dataset.window());
  std::vector<double> losses, tok_s;
  DistRunResult result;
  const auto t0 = std::chrono::steady_clock::now();
  double step_time = 0;
  int64_t saved = first_step;
  for (int64_t step = first_step; step < train.steps; ++step) {
    // Rank 0 decides whether the next step fits the budget; everyone follows.
    int64_t go = 1;
    if (run.time_budget_s > 0 && step > first_step) {
      const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      go = spent + step_time <= run.time_budget_s ? 1 : 0;
      if (world.size() > 1) world.broadcast(&go, 1, comm::DataType::kInt64, 0);
    }
    if (!go) {
      if (lead) out << "stopping at step " << step << ": the time budget of " << run.time_budget_s << " s is spent\n";
      break;
    }
    const_cast<ModelConfig&>(trainer.model().config()).mtp_loss_lambda = mtp_weight.at(step);
    trainer.trace().set_enabled(step >= train.steps - run.trace_steps ||
                                (run.time_budget_s > 0 && step >= 1 && step <= run.trace_steps));
    for (int64_t a = 0; a < train.grad_accum; ++a)
      dataset.next_batch(train.batch, tokens.data() + a * train.batch * dataset.window());
    const DistStepMetrics m = hooks.step(tokens.data(), lr.at(step), bias_rate.at(step));
    step_time = step_time == 0 ? m.seconds : 0.9 * step_time + 0.1 * m.seconds;
    losses.push_back(m.losses.main);
    const double tps = double(train.grad_accum * train.batch * train.seq) / std::max(m.seconds, 1e-9);
    if (step > first_step) tok_s.push_back(tps);
    double mtp = 0;
    for (double x : m.losses.mtp) mtp += x;
    if (D > 0) mtp /= double(D);
    if (lead && jsonl.is_open())
      jsonl << nlohmann::json({{"type", "train"},
                               {"step", step + 1},
                               {"loss", m.losses.total},
                               {"main_loss", m.losses.main},
                               {"mtp_loss", mtp},
                               {"lr", lr.at(step)},
                               {"grad_norm", m.grad_norm},
                               {"max_over_mean_load", m.max_over_mean_load},
                               {"tokens_per_s", tps},
                               {"seconds", m.seconds},
                               {"grad_sync_seconds", m.grad_sync_seconds}})
                   .dump()
            << "\n";
    if (lead && step == first_step && trainer.buffer() != nullptr)
      out << "dispatch: EP group of " << run.layout.ep << " ranks over " << trainer.groups().ep->rank_map().num_nodes()
          << " node(s), " << (trainer.buffer()->uses_two_hop() ? "node-limited two-hop path" : "one hop") << "\n";
    const bool last = step + 1 == train.steps;
    if (lead && run.log_every > 0 && ((step + 1) % run.log_every == 0 || last || step == 0)) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %6lld/%lld | loss %.4f | mtp %.4f | total %.4f | lr %.2e | gnorm %.3f | "
                    "load max/mean %.2f | %.0f tok/s",
                    (long long)(step + 1), (long long)train.steps, m.losses.main, mtp, m.losses.total, lr.at(step),
                    m.grad_norm, m.max_over_mean_load, tps);
      out << line << "\n" << std::flush;
    }
    if (train.ckpt_every > 0 && (step + 1) % train.ckpt_every == 0 && !last) {
      save(step + 1);
      saved = step + 1;
    }
  }
  if (trainer.steps_done() != saved) save(trainer.steps_done());
  result.steps = static_cast<int64_t>(losses.size());
  const size_t n = losses.size(), w = std::min<size_t>(20, n);
  result.first_mean = mean(losses, 0, w);
  result.last_mean = mean(losses, n - w, n);
  if (!tok_s.empty()) {
    std::sort(tok_s.begin(), tok_s.end());
    result.tokens_per_s = tok_s[tok_s.size() / 2];
  }
  result.breakdown = trainer.trace().breakdown();
  trainer.trace().write(run.trace_path, run.timeline_path, hooks.trace_title);
  if (hooks.finish) hooks.finish(result);

  TensorMap weights = trainer.gather_weights();
  if (lead && !run.sample_prompt.empty()) {
    Model<float> full(config);
    full.load_weights(weights);
    GenerateOptions g;
    g.max_new_tokens = run.sample_tokens;
    g.temperature = run.sample_temperature;
    g.top_k = run.sample_top_k;
    std::mt19937_64 rng(train.seed);
    GenerateResult r = generate(full, tokenizer.encode(run.sample_prompt), g, rng);
    result.sample = run.sample_prompt + tokenizer.decode(r.tokens);
  }
  return result;
}

}  // namespace switchyard::trainer::dist
