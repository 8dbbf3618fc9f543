// DistTrainer (header): DP x EP training step over the dispatch library.
#include "switchyard/trainer/dist/dist_trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "switchyard/common/error.h"
#include "switchyard/trainer/dist/sharded_checkpoint.h"
#include "switchyard/trainer/router.h"

namespace switchyard::trainer::dist {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

DistTrainer::DistTrainer(std::shared_ptr<comm::Communicator> world, const ModelConfig& config, DistOptions options)
    : options_(std::move(options)) {
  SY_REQUIRE(world != nullptr, "DistTrainer: no world communicator");
  options_.layout.validate(world->size());
  if (options_.layout.pp != 1)
    SY_THROW(InvalidArgument, "DistTrainer: --pp " << options_.layout.pp
                                                   << ": DistTrainer runs EP x DP only; pipeline stages run under "
                                                      "PipelineTrainer (switchyard/trainer/dist/pipeline_trainer.h)");
  SY_REQUIRE(config.n_routed_experts % options_.layout.ep == 0,
             "DistTrainer: " << config.n_routed_experts << " routed experts do not divide over --ep "
                             << options_.layout.ep);
  groups_ = make_groups(world, options_.layout);
  model_ = std::make_unique<Model<float>>(config);
  model_->init_random(options_.seed, options_.init_std);
  if (options_.zero1)
    zero_ = std::make_unique<ShardedAdamW>(model_->parameters(), config.n_routed_experts, groups_, options_.adam);
  else
    optimizer_ = std::make_unique<AdamW>(model_->parameters(), options_.adam);
  sync_ = std::make_unique<GradientSync>(model_->parameters(), config.n_routed_experts, groups_);
  if (options_.fp8) fp8_ = std::make_unique<Fp8Linear>(model_->parameters(), Fp8Options{options_.fp8_pow2});
  moe_layers_ = model_->moe_layer_indices();
  trace_ = std::make_unique<StepTrace>(world);
  if (options_.max_tokens_per_rank > 0) ensure_buffer(options_.max_tokens_per_rank);
}

DistTrainer::~DistTrainer() = default;

void DistTrainer::ensure_buffer(int64_t tokens_per_rank) {
  if (buffer_ && buffer_->options().max_tokens_per_rank >= tokens_per_rank) return;
  dispatch::BufferOptions b;
  b.num_experts = static_cast<int>(model_->config().n_routed_experts);
  b.hidden = model_->config().hidden_size;
  b.max_tokens_per_rank = tokens_per_rank;
  b.two_hop = true;
  buffer_ = std::make_shared<dispatch::Buffer>(groups_.ep, b);
  for (int64_t layer : moe_layers_) {
    auto provider = make_dispatched_experts(*model_, layer, buffer_, options_.wire);
    provider->set_trace(trace_.get(), static_cast<int>(layer));
    model_->set_expert_provider(layer, std::move(provider));
  }
}

DistStepMetrics DistTrainer::step(const int64_t* global_tokens, int64_t global_batch, int64_t seq, double lr,
                                  double bias_rate) {
  return step_micro_batches(global_tokens, 1, global_batch, seq, lr, bias_rate);
}

DistStepMetrics DistTrainer::step_micro_batches(const int64_t* global_tokens, int64_t micro_batches,
                                                int64_t global_batch, int64_t seq, double lr, double bias_rate) {
  const auto t0 = Clock::now();
  const int R = groups_.data_ranks();
  SY_REQUIRE(global_batch > 0 && global_batch % R == 0,
             "DistTrainer: global batch " << global_batch << " does not divide over " << R << " data ranks ("
                                          << groups_.layout.to_string() << ")");
  SY_REQUIRE(micro_batches >= 1, "DistTrainer: " << micro_batches << " micro-batches per step; need >= 1");
  const int64_t b = global_batch / R;
  const int64_t window = seq + model_->config().num_nextn_predict_layers + 1;
  const int64_t E = model_->config().n_routed_experts;
  ensure_buffer(b * seq);

  DistStepMetrics m;
  const double sync_before = sync_->comm_seconds();
  StepTrace& tr = *trace_;
  const int step_index = static_cast<int>(steps_);
  const double t_begin = tr.now();
  tr.begin_step(step_index, t_begin);
  model_->zero_grad();
  // Local losses (mean over micro-batches) and load counts (summed), reduced once below.
  std::vector<double> l;
  std::vector<double> counts(moe_layers_.size() * E, 0.0);
  double t_last = t_begin;
  for (int64_t a = 0; a < micro_batches; ++a) {
    const int64_t* micro = global_tokens + a * global_batch * window;
    const Losses& local = model_->forward(micro + groups_.data_rank() * b * window, b, seq);
    const double t_fwd = tr.now();
    tr.record_compute(pipeline::OpKind::kForward, step_index, t_last, t_fwd);
    std::vector<double> la = {local.main, local.balance, local.total};
    la.insert(la.end(), local.mtp.begin(), local.mtp.end());
    if (l.empty()) l.assign(la.size(), 0.0);
    for (size_t i = 0; i < la.size(); ++i) l[i] += la[i] / double(micro_batches);
    model_->backward();  // accumulates into the gradients
    t_last = tr.now();
    tr.record_compute(pipeline::OpKind::kBackward, step_index, t_fwd, t_last);
    for (size_t i = 0; i < moe_layers_.size(); ++i) {
      const std::vector<double>& c = model_->expert_counts(moe_layers_[i]);
      for (int64_t e = 0; e < E; ++e) counts[i * E + e] += c[e];
    }
  }
  if (micro_batches > 1) {  // the mean over micro-batches, as the one-process Trainer
    const float s = 1.0f / float(micro_batches);
    for (const auto& p : model_->parameters().all())
      for (float& g : p->grad) g *= s;
  }
  const double t_bwd = t_last;

  // Losses: mean over the data ranks (each is a mean over an equal share of sequences).
  sync_->mean_over_replica(l);
  m.losses.main = l[0];
  m.losses.balance = l[1];
  m.losses.total = l[2];
  m.losses.mtp.assign(l.begin() + 3, l.end());

  sync_->sum_over_replica(counts);

  if (zero_) {
    m.grad_norm = zero_->step(lr, options_.clip);  // reduce-scatter, clip, shard update, all-gather
    tr.record_reduce(step_index, t_bwd, tr.now());
  } else {
    sync_->reduce();
    m.grad_norm = sync_->clip(options_.clip);
    tr.record_reduce(step_index, t_bwd, tr.now());
    optimizer_->step(lr);
  }
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    update_expert_bias(model_->expert_bias(moe_layers_[i]).data(), counts.data() + i * E, E, bias_rate);
    m.max_over_mean_load = std::max(m.max_over_mean_load, load_stats(counts.data() + i * E, E).max_over_mean());
  }
  m.grad_sync_seconds = sync_->comm_seconds() - sync_before;
  m.seconds = since(t0);
  tr.end_step(tr.now());
  ++steps_;
  return m;
}

TensorMap DistTrainer::gather_weights() {
  TensorMap w = model_->weights();
  const int64_t per_rank = model_->config().n_routed_experts / groups_.layout.ep;
  for (const auto& p : model_->parameters().all()) {
    const int64_t e = routed_expert_of(p->name);
    if (e < 0 || groups_.ep->size() == 1) continue;
    HostTensor& t = w.at(p->name);
    SY_CHECK(t.dtype == DType::kF32 && static_cast<int64_t>(t.bytes.size()) == p->numel() * 4);
    groups_.ep->broadcast(t.bytes.data(), p->value.size(), comm::DataType::kFloat32, static_cast<int>(e / per_rank));
  }
  return w;
}

void DistTrainer::save_sharded(const std::string& dir, const std::string& extra_json) {
  const TensorMap weights = model_->weights();
  // Without zero1 the first holder writes whole moments; with it every rank writes its shard.
  const TensorMap moments = zero_ ? zero_->state_shards() : optimizer_->state();
  const bool first_replica = groups_.data_rank() == 0;
  TensorMap mine;
  for (const auto& p : model_->parameters().all()) {
    const int64_t e = routed_expert_of(p->name);
    const bool writes = e < 0 ? first_replica : (sync_->owns(*p) && groups_.dp_index == 0);
    if (!writes) continue;
    mine[p->name] = weights.at(p->name);
    if (zero_) continue;
    mine["exp_avg." + p->name] = moments.at("exp_avg." + p->name);
    mine["exp_avg_sq." + p->name] = moments.at("exp_avg_sq." + p->name);
  }
  if (zero_)
    for (const auto& [name, t] : moments) mine[name] = t;
  if (first_replica)
    for (int64_t layer : moe_layers_) {
      const std::string name = "model.layers." + std::to_string(layer) + ".mlp.gate.e_score_correction_bias";
      mine[name] = weights.at(name);
    }
  write_sharded_checkpoint(*groups_.world, dir, mine,
                           {{"step", zero_ ? zero_->steps() : optimizer_->steps()},
                            {"zero1", zero_ != nullptr},
                            {"ep", groups_.layout.ep},
                            {"pp", groups_.layout.pp},
                            {"dp", groups_.layout.dp},
                            {"extra", extra_json}});
}

std::string DistTrainer::load_sharded(const std::string& dir) {
  ShardedCheckpoint ck = read_sharded_checkpoint(dir, model_->parameters());
  model_->load_weights(ck.weights);  // names every missing tensor
  // load_weights gives the parameters new buffers; Fp8Linear claims GEMMs by buffer address.
  if (fp8_) {
    fp8_.reset();
    fp8_ = std::make_unique<Fp8Linear>(model_->parameters(), Fp8Options{options_.fp8_pow2});
  }
  const int64_t step = ck.meta.value("step", int64_t(0));
  if (zero_) {
    zero_->load_state(ck.moments, step);
  } else {
    ck.moments["step"] = HostTensor::from_vector<int64_t>({step}, {1});
    optimizer_->load_state(ck.moments);
  }
  steps_ = step;
  return ck.meta.value("extra", std::string());
}

}  // namespace switchyard::trainer::dist
