// The training loop, checkpoint state and the sy-train run (see trainer.h).
#include "switchyard/trainer/train/trainer.h"

#include <cblas.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "switchyard/trainer/router.h"

namespace switchyard::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60),
                  (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

// The model's MTP loss weight; the model reads it from its configuration at every
// forward/backward. Model exposes no setter, and its config_ member is not const.
void set_mtp_loss_lambda(Model<float>& model, double lambda) {
  const_cast<ModelConfig&>(model.config()).mtp_loss_lambda = lambda;
}

std::string rng_text(const std::mt19937_64& rng) {
  std::ostringstream s;
  s << rng;
  return s.str();
}

}  // namespace

void TrainOptions::validate() const {
  SY_REQUIRE(steps >= 0, "train: --steps " << steps << " must be >= 0");
  SY_REQUIRE(batch >= 1, "train: --batch " << batch << " must be >= 1");
  SY_REQUIRE(seq >= 1, "train: --seq " << seq << " must be >= 1");
  SY_REQUIRE(grad_accum >= 1, "train: --grad-accum " << grad_accum << " must be >= 1");
  SY_REQUIRE(mtp_depth >= -1, "train: --mtp-depth " << mtp_depth << " must be >= 0 (or -1 for the config's)");
  SY_REQUIRE(lr > 0 && std::isfinite(lr), "train: --lr " << lr << " must be positive");
  SY_REQUIRE(warmup >= 0, "train: --warmup " << warmup << " must be >= 0");
  SY_REQUIRE(min_lr >= 0, "train: --min-lr " << min_lr << " must be >= 0");
  SY_REQUIRE(clip >= 0, "train: --clip " << clip << " must be >= 0 (0 disables clipping)");
  SY_REQUIRE(weight_decay >= 0, "train: --weight-decay " << weight_decay << " must be >= 0");
  SY_REQUIRE(init_std > 0, "train: --init-std " << init_std << " must be positive");
  SY_REQUIRE(eval_every >= 0 && eval_batches >= 1, "train: --eval-every must be >= 0 and --eval-batches >= 1");
  SY_REQUIRE(ckpt_every >= 0 && keep >= 1, "train: --ckpt-every must be >= 0 and --keep >= 1");
  SY_REQUIRE(data_seed >= -1, "train: --data-seed " << data_seed << " must be >= 0 (or -1 for --seed)");
  SY_REQUIRE(!data.empty(), "train: --data is empty (a text file or folder)");
  (void)parse_lr_decay(lr_decay);
}

ModelConfig model_config_for(const TrainOptions& options, const Tokenizer& tokenizer) {
  ModelConfig config = options.config_path.empty() ? model_config_preset(options.preset)
                                                   : model_config_from_file(options.config_path);
  config.vocab_size = tokenizer.vocab_size();
  if (options.mtp_depth >= 0) config.num_nextn_predict_layers = options.mtp_depth;
  config.max_position_embeddings = std::max(config.max_position_embeddings, options.seq);
  if (options.max_position > 0) config.max_position_embeddings = std::max(options.max_position, options.seq);
  config.validate();
  return config;
}

DataOptions data_options_for(const TrainOptions& options, int64_t mtp_depth) {
  DataOptions data;
  data.path = options.data;
  data.val_fraction = options.val_fraction;
  data.seed = options.data_seed >= 0 ? static_cast<uint64_t>(options.data_seed) : options.seed;
  data.window = options.seq + mtp_depth + 1;
  return data;
}

Trainer::Trainer(TrainOptions options) : options_(std::move(options)) {
  options_.validate();
  tokenizer_ = make_tokenizer(options_.tokenizer);
  config_ = model_config_for(options_, *tokenizer_);
  const int64_t D = config_.num_nextn_predict_layers;
  data_ = std::make_unique<TextDataset>(data_options_for(options_, D), *tokenizer_);

  model_ = std::make_unique<Model<float>>(config_);
  model_->init_random(options_.seed, options_.init_std);
  AdamWConfig adam;
  adam.weight_decay = options_.weight_decay;
  optimizer_ = std::make_unique<AdamW>(model_->parameters(), adam);
  if (options_.fp8) fp8_ = std::make_unique<Fp8Linear>(model_->parameters(), Fp8Options{options_.fp8_pow2});
  if (!options_.ckpt_dir.empty()) checkpoints_ = std::make_unique<CheckpointManager>(options_.ckpt_dir, options_.keep);

  lr_.peak = options_.lr;
  lr_.warmup_steps = options_.warmup;
  lr_.decay = parse_lr_decay(options_.lr_decay);
  lr_.total_steps = options_.steps;
  lr_.min_lr = options_.min_lr;
  mtp_weight_ = options_.mtp_weight.empty() ? StepSchedule(config_.mtp_loss_lambda)
                                            : StepSchedule::parse(options_.mtp_weight);
  bias_rate_ = StepSchedule::parse(options_.bias_rate);
  rng_.seed(options_.seed);
  tokens_.resize(options_.batch * data_->window());
}

Trainer::~Trainer() = default;

StepMetrics Trainer::train_step() {
  const auto t0 = Clock::now();
  const int64_t B = options_.batch, T = options_.seq, D = config_.num_nextn_predict_layers;
  const int64_t E = config_.n_routed_experts;
  StepMetrics m;
  m.step = step_ + 1;
  m.lr = lr_.at(step_);
  set_mtp_loss_lambda(*model_, mtp_weight_.at(step_));
  model_->zero_grad();
  std::vector<int64_t> moe_layers = model_->moe_layer_indices();
  std::vector<std::vector<double>> counts(moe_layers.size(), std::vector<double>(E, 0.0));
  auto nonfinite = [&](const std::string& what) {
    std::ostringstream msg;
    msg << "step " << m.step << ": " << what << " (main " << m.main_loss << ", lr " << m.lr
        << "); lower --lr, raise --warmup, or pass --skip-nonfinite to skip such steps";
    if (!options_.skip_nonfinite) throw NonFiniteLoss(msg.str());
    m.skipped = true;
  };
  for (int64_t a = 0; a < options_.grad_accum && !m.skipped; ++a) {
    data_->next_batch(B, tokens_.data());
    const Losses& l = model_->forward(tokens_.data(), B, T);
    m.loss += l.total / double(options_.grad_accum);
    m.main_loss += l.main / double(options_.grad_accum);
    double mtp = 0;
    for (double x : l.mtp) mtp += x;
    if (D > 0) m.mtp_loss += mtp / double(D) / double(options_.grad_accum);
    m.balance += l.balance / double(options_.grad_accum);
    if (!std::isfinite(l.total)) {
      std::ostringstream what;
      what << "the loss is " << l.total;
      nonfinite(what.str());
      break;
    }
    model_->backward();
    for (size_t i = 0; i < moe_layers.size(); ++i) {
      const std::vector<double>& c = model_->expert_counts(moe_layers[i]);
      for (int64_t e = 0; e < E; ++e) counts[i][e] += c[e];
    }
  }
  if (!m.skipped) {
    if (options_.grad_accum > 1) {
      const float s = 1.0f / float(options_.grad_accum);
      for (const auto& p : model_->parameters().all())
        for (float& g : p->grad) g *= s;
    }
    m.grad_norm = clip_grad_norm(model_->parameters(), options_.clip);
    if (!std::isfinite(m.grad_norm)) {
      std::ostringstream what;
      what << "the gradient norm is " << m.grad_norm;
      nonfinite(what.str());
    }
  }
  if (!m.skipped) {
    optimizer_->step(m.lr);
    const double rate = bias_rate_.at(step_);
    for (size_t i = 0; i < moe_layers.size(); ++i) {
      update_expert_bias(model_->expert_bias(moe_layers[i]).data(), counts[i].data(), E, rate);
      m.max_over_mean_load = std::max(m.max_over_mean_load, load_stats(counts[i].data(), E).max_over_mean());
    }
  }
  ++step_;
  m.seconds = seconds_since(t0);
  m.tokens_per_s = double(B * T * options_.grad_accum) / std::max(m.seconds, 1e-9);
  return m;
}

double Trainer::evaluate() {
  const int64_t B = options_.batch, T = options_.seq;
  double sum = 0;
  for (int64_t i = 0; i < options_.eval_batches; ++i) {
    data_->val_batch(i, B, tokens_.data());
    sum += model_->forward(tokens_.data(), B, T).main;
  }
  return sum / double(options_.eval_batches);
}

Checkpoint Trainer::make_checkpoint() const {
  Checkpoint c;
  c.step = step_;
  c.model = model_->weights();
  c.optimizer = optimizer_->state();
  c.config_json = model_config_to_json(config_);
  nlohmann::json s;
  s["step"] = step_;
  s["data"] = {{"path", options_.data}, {"epoch", data_->position().epoch}, {"index", data_->position().index},
               {"window", data_->window()}, {"seed", options_.seed}, {"data_seed", options_.data_seed}, {"val_fraction", options_.val_fraction}};
  s["tokenizer"] = tokenizer_->name();
  s["rng"] = rng_text(rng_);
  s["options"] = {{"seq", options_.seq},      {"batch", options_.batch}, {"lr", options_.lr},
                  {"fp8", options_.fp8},      {"grad_accum", options_.grad_accum},
                  {"steps", options_.steps}, {"mtp_weight", mtp_weight_.to_string()},
                  {"bias_rate", bias_rate_.to_string()}};
  c.state_json = s.dump(2);
  return c;
}

std::string Trainer::save_checkpoint() {
  SY_REQUIRE(checkpoints_ != nullptr, "train: no checkpoint directory (--ckpt-dir)");
  return checkpoints_->save(make_checkpoint());
}

void Trainer::restore(const std::string& folder) {
  Checkpoint c = CheckpointManager::load(folder);
  nlohmann::json mine = nlohmann::json::parse(model_config_to_json(config_));
  nlohmann::json theirs;
  try {
    theirs = nlohmann::json::parse(c.config_json);
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "checkpoint \"" << folder << "\": config.json is malformed: " << e.what());
  }
  for (const auto& [key, value] : mine.items())
    SY_REQUIRE(theirs.contains(key) && theirs[key] == value,
               "checkpoint \"" << folder << "\" does not match this model: " << key << " is "
                               << (theirs.contains(key) ? theirs[key].dump() : std::string("absent"))
                               << " in the checkpoint and " << value.dump() << " here");
  nlohmann::json s;
  try {
    s = nlohmann::json::parse(c.state_json);
  } catch (const nlohmann::json::exception& e) {
    SY_THROW(InvalidArgument, "checkpoint \"" << folder << "\": state.json is malformed: " << e.what());
  }
  SY_REQUIRE(s.value("tokenizer", std::string()) == tokenizer_->name(),
             "checkpoint \"" << folder << "\" used tokenizer " << s.value("tokenizer", std::string()) << ", this run "
                             << tokenizer_->name());
  SY_REQUIRE(s["data"].value("window", int64_t(0)) == data_->window(),
             "checkpoint \"" << folder << "\" used windows of " << s["data"].value("window", int64_t(0))
                             << " tokens, this run " << data_->window() << " (--seq and --mtp-depth must match)");
  model_->load_weights(c.model);
  // load_weights gives the parameters new buffers; Fp8Linear claims GEMMs by buffer address.
  if (fp8_) {
    fp8_.reset();
    fp8_ = std::make_unique<Fp8Linear>(model_->parameters(), Fp8Options{options_.fp8_pow2});
  }
  optimizer_->load_state(c.optimizer);
  data_->set_position({s["data"]["epoch"].get<int64_t>(), s["data"]["index"].get<int64_t>()});
  std::istringstream r(s["rng"].get<std::string>());
  r >> rng_;
  SY_REQUIRE(!r.fail(), "checkpoint \"" << folder << "\": the RNG state does not parse");
  step_ = s["step"].get<int64_t>();
}

StepMetrics run_training(Trainer& trainer, const RunOptions& run, std::ostream& out) {
  const TrainOptions& o = trainer.options();
  if (run.resume && !o.ckpt_dir.empty()) {
    CheckpointManager mgr(o.ckpt_dir, o.keep);
    std::string latest = mgr.latest();
    if (!latest.empty()) {
      trainer.restore(latest);
      out << "resumed from " << latest << " at step " << trainer.step() << "\n";
    } else {
      out << "no checkpoint in " << o.ckpt_dir << "; starting from step 0\n";
    }
  }
  std::ofstream jsonl;
  if (!run.jsonl_path.empty()) {
    jsonl.open(run.jsonl_path, std::ios::app);
    if (!jsonl) SY_THROW(IoError, "train: cannot write --log-jsonl \"" << run.jsonl_path << "\"");
  }
  const auto t0 = Clock::now();
  const int64_t first = trainer.step();
  int64_t saved = first;  // the step of the last checkpoint (or of the resume point)
  StepMetrics m;
  double step_time = 0;
  while (trainer.step() < o.steps) {
    if (run.time_budget_s > 0 && trainer.step() > first && seconds_since(t0) + step_time > run.time_budget_s) {
      out << "stopping at step " << trainer.step() << ": the time budget of " << run.time_budget_s << " s is spent\n";
      break;
    }
    m = trainer.train_step();
    step_time = step_time == 0 ? m.seconds : 0.9 * step_time + 0.1 * m.seconds;
    if (jsonl.is_open()) {
      nlohmann::json j = {{"type", "train"},         {"step", m.step},         {"loss", m.loss},
                          {"main_loss", m.main_loss}, {"mtp_loss", m.mtp_loss}, {"balance", m.balance},
                          {"lr", m.lr},               {"grad_norm", m.grad_norm},
                          {"max_over_mean_load", m.max_over_mean_load},
                          {"tokens_per_s", m.tokens_per_s}, {"seconds", m.seconds}, {"skipped", m.skipped}};
      jsonl << j.dump() << "\n";
    }
    bool last = trainer.step() == o.steps;
    if (run.log_every > 0 && (m.step % run.log_every == 0 || last || m.step == first + 1)) {
      double left = step_time * double(o.steps - trainer.step());
      if (run.time_budget_s > 0) left = std::min(left, std::max(0.0, run.time_budget_s - seconds_since(t0)));
      char line[256];
      std::snprintf(line, sizeof line,
                    "step %6lld/%lld | loss %.4f | mtp %.4f | total %.4f | lr %.2e | gnorm %.3f | "
                    "load max/mean %.2f | %.0f tok/s | %s left%s",
                    (long long)m.step, (long long)o.steps, m.main_loss, m.mtp_loss, m.loss, m.lr, m.grad_norm,
                    m.max_over_mean_load, m.tokens_per_s, format_duration(left).c_str(),
                    m.skipped ? " | SKIPPED (non-finite)" : "");
      out << line << "\n" << std::flush;
    }
    if (o.eval_every > 0 && (m.step % o.eval_every == 0 || last)) {
      double val = trainer.evaluate();
      char line[128];
      std::snprintf(line, sizeof line, "eval step %lld | val loss %.4f", (long long)m.step, val);
      out << line << "\n" << std::flush;
      if (jsonl.is_open()) jsonl << nlohmann::json({{"type", "eval"}, {"step", m.step}, {"val_loss", val}}).dump() << "\n";
    }
    if (!o.ckpt_dir.empty() && o.ckpt_every > 0 && m.step % o.ckpt_every == 0 && !last) {
      out << "checkpoint " << trainer.save_checkpoint() << "\n";
      saved = trainer.step();
    }
  }
  if (!o.ckpt_dir.empty() && trainer.step() != saved) out << "checkpoint " << trainer.save_checkpoint() << "\n";
  return m;
}

}  // namespace switchyard::trainer
