// run_pipeline_training (header).
#include "switchyard/trainer/dist/pipeline_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "switchyard/common/error.h"
#include "switchyard/common/param.h"
#include "switchyard/trainer/dist/pipeline_trainer.h"
#include "switchyard/trainer/dist/sharded_checkpoint.h"
#include "switchyard/trainer/train/data.h"
#include "switchyard/trainer/train/generate.h"
#include "switchyard/trainer/train/schedule.h"
#include "switchyard/trainer/train/tokenizer.h"

namespace switchyard::trainer::dist {
namespace {

const Param<int64_t> kFbOverlap("TRAIN_FB_OVERLAP", 1, "bool",
                                "1: the schedule's FB pairs overlap one micro-batch's MoE dispatch/combine with the "
                                "other's compute; 0: forward then backward (the before/after measurement)");

double mean(const std::vector<double>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return end > begin ? s / double(end - begin) : 0;
}

}  // namespace

DistRunResult run_pipeline_training(std::shared_ptr<comm::Communicator> world, const TrainOptions& train,
                                    const DistRunOptions& run, std::ostream& out) {
  train.validate();
  run.layout.validate(world->size());
  const char* kWhat = "pipeline training (--pp > 1): ";
  const bool lead = world->rank() == 0;

  auto tokenizer = make_tokenizer(train.tokenizer);
  ModelConfig config = model_config_for(train, *tokenizer);
  const int64_t D = config.num_nextn_predict_layers;
  TextDataset dataset(data_options_for(train, D), *tokenizer);

  PipelineOptions o;
  o.dist.layout = run.layout;
  o.dist.wire = run.wire;
  o.dist.zero1 = run.zero1;
  o.dist.fp8 = train.fp8;
  o.dist.fp8_pow2 = train.fp8_pow2;
  o.dist.adam.weight_decay = train.weight_decay;
  o.dist.clip = train.clip;
  o.dist.seed = train.seed;
  o.dist.init_std = train.init_std;
  o.schedule = pipeline::parse_schedule_kind(run.schedule);
  o.microbatches = static_cast<int>(run.microbatches);
  o.fb_overlap = kFbOverlap.get() != 0;
  PipelineTrainer trainer(world, config, o);

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
    if (!jsonl) SY_THROW(IoError, kWhat << "cannot write --log_jsonl \"" << run.jsonl_path << "\"");
  }
  if (lead) {
    out << "distributed: " << world->size() << " ranks on " << world->rank_map().num_nodes() << " node(s), "
        << run.layout.to_string() << ", schedule " << trainer.schedule().name << " with " << run.microbatches
        << " micro-batches, " << trainer.schedule().num_stages << " stages, expert payload "
        << expert_wire_name(run.wire) << ", global batch " << train.batch << " x " << train.seq << " tokens\n";
    const pipeline::Schedule& sched = trainer.schedule();
    for (const StagePlan& s : plan_stages(config, sched.num_stages)) {
      out << "  stage " << s.stage << " on pipeline rank " << sched.paths[0][s.stage];
      if (sched.paths.size() > 1) out << " (mirrored copy on rank " << sched.paths[1][s.stage] << ")";
      out << ": " << (s.embed ? "embedding, " : "") << "layers [" << s.first << ", " << s.last << ")"
          << (s.head ? ", final norm, head, MTP" : "") << "\n";
    }
    out << std::flush;
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

  // One step: grad_accum rounds of the schedule, each on a global batch read in order.
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
      world->broadcast(&go, 1, comm::DataType::kInt64, 0);
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
    DistStepMetrics m = trainer.step_accumulated(tokens.data(), train.grad_accum, train.batch, train.seq,
                                                 lr.at(step), bias_rate.at(step));
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
    if (lead && run.log_every > 0 && ((step + 1) % run.log_every == 0 || step + 1 == train.steps || step == 0)) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %6lld/%lld | loss %.4f | mtp %.4f | total %.4f | lr %.2e | gnorm %.3f | "
                    "load max/mean %.2f | %.0f tok/s",
                    (long long)(step + 1), (long long)train.steps, m.losses.main, mtp, m.losses.total, lr.at(step),
                    m.grad_norm, m.max_over_mean_load, tps);
      out << line << "\n" << std::flush;
    }
    if (train.ckpt_every > 0 && (step + 1) % train.ckpt_every == 0 && step + 1 != train.steps) {
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
  if (lead && result.breakdown.async_comm > 0)
    out << "FB pairs (traced steps): " << result.breakdown.async_comm
        << " s of communication overlapped with the other micro-batch's compute, "
        << static_cast<int>(100 * result.breakdown.pair_hidden_share() + 0.5) << "% of it hidden\n";
  trainer.trace().write(run.trace_path, run.timeline_path,
                        "sy-train " + run.layout.to_string() + " " + trainer.schedule().name + " (measured, rank rows)");

  if (!run.trace_path.empty() && result.steps > 0) {
    std::string path = run.trace_path;
    if (path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0) path.resize(path.size() - 5);
    path += ".pipeline.json";
    trainer.write_pipeline_trace(path);
    if (lead) out << "pipeline trace of the last step (stages, micro-batches, P2P arrows): " << path << "\n";
  }
  TensorMap weights = trainer.gather_weights();
  if (lead && !run.sample_prompt.empty()) {
    Model<float> full(config);
    full.load_weights(weights);
    GenerateOptions g;
    g.max_new_tokens = run.sample_tokens;
    g.temperature = run.sample_temperature;
    g.top_k = run.sample_top_k;
    std::mt19937_64 rng(train.seed);
    GenerateResult r = generate(full, tokenizer->encode(run.sample_prompt), g, rng);
    result.sample = run.sample_prompt + tokenizer->decode(r.tokens);
  }
  return result;
}

}  // namespace switchyard::trainer::dist
