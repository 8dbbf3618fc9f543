// PipelineTrainer (header): stages of the model under the pipeline executor, one model copy
// per micro-batch, gradient accumulation and the EP x DP x PP reductions.
#include "switchyard/trainer/dist/pipeline_trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "switchyard/common/error.h"
#include "switchyard/trainer/dist/sharded_adamw.h"
#include "switchyard/trainer/dist/sharded_checkpoint.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/linear_backend.h"

namespace switchyard::trainer::dist {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr const char* kEmbedding = "model.embed_tokens.weight";

// Decoder layer index of "model.layers.<l>.*", or -1.
int64_t layer_of(const std::string& name) {
  static const std::string kKey = "model.layers.";
  if (name.rfind(kKey, 0) != 0) return -1;
  const size_t end = name.find('.', kKey.size());
  return std::stoll(name.substr(kKey.size(), end - kKey.size()));
}

}  // namespace

// The FP8 Linear recipe over every model copy: one Fp8Linear per copy (each claims its copy's
// weights by the address of their buffers), this router in the process-global slot. The
// lanes of an overlapped pair call it one at a time (they compute in turns).
class PipelineTrainer::Fp8Copies : public LinearBackend {
 public:
  Fp8Copies(const std::vector<std::unique_ptr<Model<float>>>& models, Fp8Options options) {
    SY_REQUIRE(linear_backend() == nullptr, "PipelineTrainer: --fp8: another Linear back-end is already installed");
    for (const auto& m : models) {
      copies_.push_back(std::make_unique<Fp8Linear>(m->parameters(), options));  // installs itself
      set_linear_backend(nullptr);
    }
    set_linear_backend(this);
  }
  ~Fp8Copies() override {
    if (linear_backend() == this) set_linear_backend(nullptr);
  }
  bool forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y) override {
    for (auto& c : copies_)
      if (c->forward(x, W, n, in, out, y)) return true;
    return false;
  }
  bool backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                      bool accumulate) override {
    for (auto& c : copies_)
      if (c->backward_input(dy, W, n, in, out, dx, accumulate)) return true;
    return false;
  }
  bool backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW) override {
    for (auto& c : copies_)
      if (c->backward_weight(dy, x, n, in, out, dW)) return true;
    return false;
  }
  int64_t fp8_gemms() const {
    int64_t n = 0;
    for (const auto& c : copies_) n += c->fp8_gemms();
    return n;
  }

 private:
  std::vector<std::unique_ptr<Fp8Linear>> copies_;
};

std::vector<StagePlan> plan_stages(const ModelConfig& config, int num_stages) {
  SY_REQUIRE(num_stages >= 1, "plan_stages: " << num_stages << " stages");
  const int64_t L = config.num_hidden_layers, units = L + config.num_nextn_predict_layers;
  std::vector<StagePlan> out(num_stages);
  for (int s = 0; s < num_stages; ++s) {
    out[s].stage = s;
    out[s].embed = s == 0;
    out[s].head = s == num_stages - 1;
  }
  // Main layer l is unit l; the MTP units all sit in the last stage.
  auto stage_of = [&](int64_t u) { return static_cast<int>(std::min<int64_t>(u * num_stages / units, num_stages - 1)); };
  int64_t at = 0;
  for (int s = 0; s < num_stages; ++s) {
    out[s].first = at;
    while (at < L && stage_of(at) == s) ++at;
    out[s].last = at;
  }
  out[num_stages - 1].last = L;
  return out;
}

PipelineTrainer::PipelineTrainer(std::shared_ptr<comm::Communicator> world, const ModelConfig& config,
                                 PipelineOptions options)
    : options_(std::move(options)), config_(config) {
  SY_REQUIRE(world != nullptr, "PipelineTrainer: no world communicator");
  const ParallelLayout& layout = options_.dist.layout;
  layout.validate(world->size());
  SY_REQUIRE(config.n_routed_experts % layout.ep == 0,
             "PipelineTrainer: " << config.n_routed_experts << " routed experts do not divide over --ep " << layout.ep);
  pipeline::GeneratorOptions g;
  g.num_ranks = layout.pp;
  g.num_microbatches = options_.microbatches;
  schedule_ = pipeline::generate(options_.schedule, g);  // names the valid sizes otherwise
  mirrored_ = schedule_.parameter_copies() > 1;
  if (schedule_.parameter_copies() > 2 || schedule_.paths.size() > 2)
    SY_THROW(Unsupported, "PipelineTrainer: schedule " << schedule_.name << " keeps " << schedule_.parameter_copies()
                                                       << " copies of a stage on " << schedule_.paths.size()
                                                       << " paths; the trainer handles 1 (one path) or 2 (DualPipe)");
  groups_ = make_groups(world, layout);
  SY_CHECK(groups_.pp->rank() == groups_.pp_index);
  plan_ = plan_stages(config, schedule_.num_stages);
  for (int s : schedule_.stages_on(groups_.pp_index)) mine_.push_back(plan_[s]);
  const int first_rank = schedule_.rank_of(0, 0), last_rank = schedule_.rank_of(schedule_.num_stages - 1, 0);
  shares_embedding_ = first_rank != last_rank;
  if (mirrored_) {
    // DualPipe: pipeline ranks r and P-1-r hold the same two stages (one per direction).
    const int P = layout.pp, r = groups_.pp_index;
    mirror_ = groups_.pp->split(std::min(r, P - 1 - r), r);
    SY_CHECK(mirror_->size() == 2);
  }

  for (int m = 0; m < options_.microbatches; ++m) {
    models_.push_back(std::make_unique<Model<float>>(config));
    if (m == 0) models_[0]->init_random(options_.dist.seed, options_.dist.init_std);
  }
  Model<float>& master = *models_[0];
  const int64_t L = config.num_hidden_layers;
  std::set<int64_t> layers;
  bool embed = false, head = false;
  for (const StagePlan& s : mine_) {
    for (int64_t l = s.first; l < s.last; ++l) layers.insert(l);
    embed |= s.embed;
    head |= s.head;
  }
  if (head)
    for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k) layers.insert(L + k);
  const int64_t per_rank = config.n_routed_experts / layout.ep;
  std::vector<const Parameter<float>*> sync_params;
  const auto& all = master.parameters().all();
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string& name = all[i]->name;
    const int64_t l = layer_of(name);
    bool in = l >= 0 ? layers.count(l) > 0 : name == kEmbedding ? (embed || head) : head;
    if (!in) continue;
    const int64_t e = routed_expert_of(name);
    if (e >= 0 && e / per_rank != groups_.ep_index) {
      sync_params.push_back(all[i].get());  // GradientSync zeroes other EP ranks' experts
      continue;
    }
    held_.push_back(static_cast<int>(i));
    // The last stage's embedding copy: summed into the first stage's, not counted twice.
    if (!(name == kEmbedding && !embed)) sync_params.push_back(all[i].get());
  }
  for (int64_t l : master.moe_layer_indices())
    if (layers.count(l)) held_moe_.push_back(l);
  if (mirrored_) {
    // Gradients summed over the two copies by the executor's REDUCE, one FP64 buffer per
    // stage; the embedding (stage 0 and the head's MTP lookups) goes through the PP sum below.
    for (int i : held_) {
      const std::string& name = all[i]->name;
      if (name != kEmbedding) mirror_params_[stage_of(name)].push_back(i);
    }
  }
  optimizer_ = std::make_unique<AdamW>(master.parameters(), options_.dist.adam);
  sync_ = std::make_unique<GradientSync>(master.parameters(), config.n_routed_experts, groups_, sync_params);
  // Mirrored copies count once in the gradient norm: on the pipeline ranks r < P/2.
  if (mirrored_) sync_->set_counts_in_norm(groups_.pp_index < layout.pp / 2);
  if (options_.dist.zero1) {  // optimizer state of the stage's parameters sharded over their replicas
    zero_ = std::make_unique<ShardedAdamW>(master.parameters(), config.n_routed_experts, groups_, options_.dist.adam,
                                           sync_params);
    if (mirrored_) zero_->set_counts_in_norm(groups_.pp_index < layout.pp / 2);
  }
  trace_ = std::make_unique<StepTrace>(world);
  mb_losses_.resize(options_.microbatches);
  if (options_.dist.fp8) fp8_ = std::make_unique<Fp8Copies>(models_, Fp8Options{options_.dist.fp8_pow2});
  if (options_.dist.max_tokens_per_rank > 0) ensure_buffer(options_.dist.max_tokens_per_rank);
}

PipelineTrainer::~PipelineTrainer() = default;

int64_t PipelineTrainer::fp8_gemms() const { return fp8_ ? fp8_->fp8_gemms() : 0; }

int PipelineTrainer::stage_of(const std::string& name) const {
  const int64_t L = config_.num_hidden_layers, l = layer_of(name);
  if (name == kEmbedding) return 0;
  if (l >= 0 && l < L)
    for (const StagePlan& s : plan_)
      if (l >= s.first && l < s.last) return s.stage;
  return schedule_.num_stages - 1;  // norm, head, MTP layers
}

bool PipelineTrainer::runs_here(int stage, int mb) const { return schedule_.rank_of(stage, mb) == groups_.pp_index; }

void PipelineTrainer::ensure_buffer(int64_t tokens_per_rank) {
  if (buffer_ && buffer_->options().max_tokens_per_rank >= tokens_per_rank) return;
  dispatch::BufferOptions b;
  b.num_experts = static_cast<int>(config_.n_routed_experts);
  b.hidden = config_.hidden_size;
  b.max_tokens_per_rank = tokens_per_rank;
  b.two_hop = true;
  buffer_ = std::make_shared<dispatch::Buffer>(groups_.ep, b);
  for (auto& model : models_)
    for (int64_t layer : held_moe_) {
      auto provider = make_dispatched_experts(*model, layer, buffer_, options_.dist.wire);
      provider->set_trace(trace_.get(), static_cast<int>(layer));
      model->set_expert_provider(layer, std::move(provider));
    }
}

namespace {

void to_float(const double* in, std::vector<float>& out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(in[i]);
}
void to_double(const std::vector<float>& in, double* out) {
  for (size_t i = 0; i < in.size(); ++i) out[i] = in[i];
}

}  // namespace

// The chunks of a (stage, micro-batch) on its model copy. Inside an overlapped pair the
// lanes record their own compute stretches, so the chunk is not recorded as a whole.
void PipelineTrainer::forward_chunk(int stage, int mb, const double* in, double* out, Staging& st) {
  const double t0 = trace_->now();
  const StagePlan& s = plan_.at(stage);
  Model<float>& m = *models_.at(mb);
  if (s.embed)
    m.embed_forward(st.in.data());
  else
    to_float(in, st.in);
  m.layers_forward(s.first, s.last, st.in.data(), st.out.data());
  if (s.head)
    mb_losses_[mb] = m.head_forward(st.out.data());
  else
    to_double(st.out, out);
  if (!current_fb_lane()) trace_->record_compute(pipeline::OpKind::kForward, trace_->step(), t0, trace_->now());
}

void PipelineTrainer::backward_input_chunk(int stage, int mb, const double* grad_out, double* grad_in, Staging& st) {
  const double t0 = trace_->now();
  const StagePlan& s = plan_.at(stage);
  Model<float>& m = *models_.at(mb);
  if (s.head)
    m.head_backward_input(st.out.data());
  else
    to_float(grad_out, st.out);
  m.layers_backward_input(s.first, s.last, st.out.data(), s.embed ? nullptr : st.in.data());
  if (!s.embed) to_double(st.in, grad_in);
  if (!current_fb_lane())
    trace_->record_compute(pipeline::OpKind::kBackwardInput, trace_->step(), t0, trace_->now());
}

void PipelineTrainer::backward_weight_chunk(int stage, int mb) {
  const double t0 = trace_->now();
  const StagePlan& s = plan_.at(stage);
  Model<float>& m = *models_.at(mb);
  if (s.head) m.head_backward_weight();
  m.layers_backward_weight(s.first, s.last);
  if (s.embed) m.embed_backward(nullptr);
  if (!current_fb_lane())
    trace_->record_compute(pipeline::OpKind::kBackwardWeight, trace_->step(), t0, trace_->now());
}

void PipelineTrainer::ensure_executor(size_t activation_elems) {
  if (executor_ && activation_elems_ == activation_elems) return;
  activation_elems_ = activation_elems;
  for (Staging& st : staging_) {
    st.in.resize(activation_elems);
    st.out.resize(activation_elems);
  }
  pipeline::StageCallbacks cb;
  cb.forward = [this](int stage, int mb, const double* in, double* out) {
    forward_chunk(stage, mb, in, out, staging_[0]);
  };
  cb.backward_input = [this](int stage, int mb, const double* grad_out, double* grad_in) {
    backward_input_chunk(stage, mb, grad_out, grad_in, staging_[0]);
  };
  cb.backward_weight = [this](int stage, int mb) { backward_weight_chunk(stage, mb); };
  if (mirrored_) {
    // REDUCE (after this rank's last W): the stage's held gradients summed over the
    // micro-batch copies in FP64, then summed in place over the two ranks holding the stage.
    cb.gradients = [this](int stage) -> std::span<double> {
      std::vector<double>& buf = mirror_buf_[stage];
      buf.clear();
      for (int i : mirror_params_[stage]) {
        const size_t at = buf.size();
        buf.resize(at + models_[0]->parameters().all()[i]->grad.size(), 0.0);
        for (const auto& model : models_) {
          const std::vector<float>& g = model->parameters().all()[i]->grad;
          for (size_t j = 0; j < g.size(); ++j) buf[at + j] += g[j];
        }
      }
      return std::span<double>(buf);
    };
  }
  if (options_.fb_overlap) {
    if (!overlap_) overlap_ = std::make_unique<FbOverlap>(trace_.get());
    cb.forward_backward = [this](int f_stage, int f_mb, const double* in, double* out, int b_stage, int b_mb,
                                 const double* grad_out, double* grad_in) {
      overlap_->run_pair(
          f_stage, f_mb, [&] { forward_chunk(f_stage, f_mb, in, out, staging_[0]); }, b_stage, b_mb,
          [&] {
            backward_input_chunk(b_stage, b_mb, grad_out, grad_in, staging_[1]);
            backward_weight_chunk(b_stage, b_mb);
          });
    };
  }
  executor_ = std::make_unique<pipeline::Executor>(groups_.pp, schedule_, activation_elems, std::move(cb));
}

void PipelineTrainer::refresh_copies() {
  Model<float>& master = *models_[0];
  const auto& src = master.parameters().all();
  for (size_t m = 1; m < models_.size(); ++m) {
    Model<float>& copy = *models_[m];
    const auto& dst = copy.parameters().all();
    for (int i : held_) dst[i]->value = src[i]->value;
    for (int64_t l : held_moe_) copy.expert_bias(l) = master.expert_bias(l);
    const_cast<ModelConfig&>(copy.config()).mtp_loss_lambda = master.config().mtp_loss_lambda;
  }
  for (auto& model : models_) model->zero_grad();
}

void PipelineTrainer::accumulate_copies(double num_microbatches) {
  const auto& dst = models_[0]->parameters().all();
  const float scale = 1.0f / static_cast<float>(num_microbatches);
  if (mirrored_) {  // the executor's REDUCE summed them (FP64): the mean over micro-batches
    const double M = num_microbatches;
    for (const auto& [stage, params] : mirror_params_) {
      const std::vector<double>& buf = mirror_buf_.at(stage);
      size_t at = 0;
      for (int i : params) {
        std::vector<float>& g = dst[i]->grad;
        for (size_t j = 0; j < g.size(); ++j) g[j] = static_cast<float>(buf[at + j] / M);
        at += g.size();
      }
      SY_CHECK(at == buf.size());
    }
  }
  for (int i : held_) {
    if (mirrored_ && dst[i]->name != kEmbedding) continue;
    std::vector<float>& g = dst[i]->grad;
    for (size_t m = 1; m < models_.size(); ++m) {
      const std::vector<float>& c = models_[m]->parameters().all()[i]->grad;
      for (size_t j = 0; j < g.size(); ++j) g[j] += c[j];
    }
    if (num_microbatches > 1)
      for (float& x : g) x *= scale;
  }
}

DistStepMetrics PipelineTrainer::step(const int64_t* global_tokens, int64_t global_batch, int64_t seq, double lr,
                                      double bias_rate) {
  return step_accumulated(global_tokens, 1, global_batch, seq, lr, bias_rate);
}

DistStepMetrics PipelineTrainer::step_accumulated(const int64_t* global_tokens, int64_t accum, int64_t global_batch,
                                                  int64_t seq, double lr, double bias_rate) {
  const auto t0 = Clock::now();
  const int M = options_.microbatches, R = groups_.data_ranks();
  SY_REQUIRE(accum >= 1, "PipelineTrainer: " << accum << " accumulation rounds per step; need >= 1");
  SY_REQUIRE(global_batch > 0 && global_batch % (int64_t(M) * R) == 0,
             "PipelineTrainer: global batch " << global_batch << " does not divide into " << M
                                              << " micro-batches over " << R << " data ranks ("
                                              << groups_.layout.to_string() << ")");
  const int64_t rows = global_batch / (int64_t(M) * R);  // per micro-batch and data rank
  const int64_t window = seq + config_.num_nextn_predict_layers + 1, E = config_.n_routed_experts;
  const int64_t D = config_.num_nextn_predict_layers;
  ensure_buffer(rows * seq);

  DistStepMetrics out;
  StepTrace& tr = *trace_;
  const int step_index = static_cast<int>(steps_);
  const double t_begin = tr.now();
  tr.begin_step(step_index, t_begin);
  refresh_copies();
  ensure_executor(static_cast<size_t>(rows * seq * config_.hidden_size));
  // Losses: this rank's pieces (means over all its micro-batches), summed over the pipeline,
  // averaged over the data ranks. Load counts of the held MoE layers summed over every
  // micro-batch (and below over the data ranks).
  std::vector<double> l(2 + D, 0.0);  // main, balance, mtp[D]
  std::vector<double> counts(held_moe_.size() * E, 0.0);
  const double n_mb = double(M) * double(accum);
  for (int64_t a = 0; a < accum; ++a) {  // gradients add up in the copies over the rounds
    const int64_t* tokens = global_tokens + a * global_batch * window;
    for (int m = 0; m < M; ++m) {
      const int64_t row0 = m * (global_batch / M) + groups_.data_rank() * rows;
      models_[m]->stage_begin(tokens + row0 * window, rows, seq);
      mb_losses_[m] = Losses{};
    }
    if (overlap_) overlap_->clear_sub_steps();  // the trace shows the last run's
    executor_->run();
    for (int m = 0; m < M; ++m) {
      for (const StagePlan& s : mine_) {
        if (!runs_here(s.stage, m)) continue;  // DualPipe: the other direction's copy
        l[1] += models_[m]->balance_loss(s.first, s.last) / n_mb;
        if (s.head) {
          l[0] += mb_losses_[m].main / n_mb;
          l[1] += mb_losses_[m].balance / n_mb;
          for (int64_t k = 0; k < D; ++k) l[2 + k] += mb_losses_[m].mtp[k] / n_mb;
        }
      }
      for (size_t i = 0; i < held_moe_.size(); ++i) {
        const int64_t layer = held_moe_[i];
        if (!runs_here(stage_of("model.layers." + std::to_string(layer) + "."), m)) continue;
        const std::vector<double>& c = models_[m]->expert_counts(layer);
        for (int64_t e = 0; e < E; ++e) counts[i * E + e] += c[e];
      }
    }
  }
  const double t_run = tr.now();

  std::vector<double> sum(l.size());
  groups_.world->all_reduce(l.data(), sum.data(), l.size(), comm::DataType::kFloat64, comm::ReduceOp::kSum);
  out.losses.main = sum[0] / R;
  out.losses.balance = sum[1] / R;
  out.losses.total = out.losses.main + config_.aux_loss_alpha * out.losses.balance;
  for (int64_t k = 0; k < D; ++k) {
    out.losses.mtp.push_back(sum[2 + k] / R);
    out.losses.total += models_[0]->config().mtp_loss_lambda / D * out.losses.mtp.back();
  }

  if (mirrored_ && !counts.empty()) {  // the other direction's micro-batches, on the mirror rank
    std::vector<double> both(counts.size());
    mirror_->all_reduce(counts.data(), both.data(), counts.size(), comm::DataType::kFloat64, comm::ReduceOp::kSum);
    counts.swap(both);
  }
  sync_->sum_over_replica(counts);

  const double sync_before = sync_->comm_seconds();
  accumulate_copies(n_mb);
  Model<float>& master = *models_[0];
  Parameter<float>& embed = master.parameters().at(kEmbedding);
  if (shares_embedding_ && groups_.layout.pp > 1) {
    // The first and last stages both add into the embedding gradient: sum over the pipeline
    // (ranks without it contribute zeros).
    const bool holder = std::any_of(mine_.begin(), mine_.end(), [](const StagePlan& s) { return s.embed || s.head; });
    if (!holder) std::fill(embed.grad.begin(), embed.grad.end(), 0.0f);
    std::vector<float> total(embed.grad.size());
    groups_.pp->all_reduce(embed.grad.data(), total.data(), total.size(), comm::DataType::kFloat32,
                           comm::ReduceOp::kSum);
    embed.grad.swap(total);
  }
  if (zero_) {
    out.grad_norm = zero_->step(lr, options_.dist.clip);  // reduce-scatter, clip, shard update, all-gather
    tr.record_reduce(step_index, t_run, tr.now());
    out.grad_sync_seconds = tr.now() - t_run;
  } else {
    sync_->reduce();
    out.grad_norm = sync_->clip(options_.dist.clip);
    tr.record_reduce(step_index, t_run, tr.now());
    out.grad_sync_seconds = sync_->comm_seconds() - sync_before;
    optimizer_->step(lr);
  }
  if (shares_embedding_ && groups_.layout.pp > 1)
    groups_.pp->broadcast(embed.value.data(), embed.value.size(), comm::DataType::kFloat32,
                          schedule_.rank_of(0, 0));

  double worst = 0;
  for (size_t i = 0; i < held_moe_.size(); ++i) {
    update_expert_bias(master.expert_bias(held_moe_[i]).data(), counts.data() + i * E, E, bias_rate);
    worst = std::max(worst, load_stats(counts.data() + i * E, E).max_over_mean());
  }
  groups_.world->all_reduce(&worst, &out.max_over_mean_load, 1, comm::DataType::kFloat64, comm::ReduceOp::kMax);
  out.seconds = since(t0);
  tr.end_step(tr.now());
  ++steps_;
  return out;
}

int PipelineTrainer::holder_rank(const std::string& name) const {
  const int64_t L = config_.num_hidden_layers, l = layer_of(name);
  int stage = schedule_.num_stages - 1;  // norm, head, MTP layers
  if (name == kEmbedding) {
    stage = 0;
  } else if (l >= 0 && l < L) {
    for (const StagePlan& s : plan_)
      if (l >= s.first && l < s.last) stage = s.stage;
  }
  const int pp_index = schedule_.rank_of(stage, 0);
  const int64_t e = routed_expert_of(name);
  const int ep_index = e < 0 ? 0 : static_cast<int>(e / (config_.n_routed_experts / groups_.layout.ep));
  return pp_index * groups_.layout.dp * groups_.layout.ep + ep_index;  // DP index 0
}

void PipelineTrainer::write_pipeline_trace(const std::string& path) {
  SY_REQUIRE(executor_ != nullptr, "PipelineTrainer: write_pipeline_trace before the first step");
  if (groups_.ep_index == 0 && groups_.dp_index == 0) {
    if (overlap_) executor_->add_sub_step_events(overlap_->sub_steps());  // the FB pairs' sub-steps
    executor_->write_trace(path);  // collective over PP
  }
  groups_.world->barrier();
}

TensorMap PipelineTrainer::gather_weights() {
  TensorMap w = models_[0]->weights();
  if (groups_.world->size() == 1) return w;
  for (auto& [name, t] : w) {
    SY_CHECK(t.dtype == DType::kF32);
    groups_.world->broadcast(t.bytes.data(), t.bytes.size() / 4, comm::DataType::kFloat32, holder_rank(name));
  }
  return w;
}

void PipelineTrainer::save_sharded(const std::string& dir, const std::string& extra_json) {
  const TensorMap weights = models_[0]->weights();
  // Without zero1 the holder writes whole moments; with it every rank writes its slices (of
  // DualPipe's two copies, the ranks r < P/2).
  const TensorMap moments = zero_ ? zero_->state_shards() : optimizer_->state();
  const int me = groups_.world->rank();
  TensorMap mine;
  for (const auto& [name, t] : weights) {
    if (holder_rank(name) != me) continue;
    mine[name] = t;
    if (zero_) continue;
    for (const char* key : {"exp_avg.", "exp_avg_sq."}) {
      auto m = moments.find(key + name);
      if (m != moments.end()) mine[m->first] = m->second;  // router biases have none
    }
  }
  if (zero_ && (!mirrored_ || groups_.pp_index < groups_.layout.pp / 2))
    for (const auto& [name, t] : moments) mine[name] = t;
  write_sharded_checkpoint(*groups_.world, dir, mine,
                           {{"step", zero_ ? zero_->steps() : optimizer_->steps()},
                            {"zero1", zero_ != nullptr},
                            {"ep", groups_.layout.ep},
                            {"pp", groups_.layout.pp},
                            {"dp", groups_.layout.dp},
                            {"schedule", schedule_.name},
                            {"microbatches", options_.microbatches},
                            {"extra", extra_json}});
}

std::string PipelineTrainer::load_sharded(const std::string& dir) {
  Model<float>& master = *models_[0];
  ShardedCheckpoint ck = read_sharded_checkpoint(dir, master.parameters());
  master.load_weights(ck.weights);  // names every missing tensor; copies refresh at the next step
  if (fp8_) {  // claims the weights by address: take them again
    fp8_.reset();
    fp8_ = std::make_unique<Fp8Copies>(models_, Fp8Options{options_.dist.fp8_pow2});
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
