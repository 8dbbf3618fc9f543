// DeepSeek-V3 model: forward, losses and split backward (see model.h).
#include "switchyard/trainer/model.h"

#include <cmath>
#include <cstring>
#include <algorithm>
#include <functional>
#include <limits>

#include "decoder_layer.h"
#include "init_random.h"
#include "kernels.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer {

template <class T>
Model<T>::Model(const ModelConfig& config, ModelOptions options) : config_(config), options_(options) {
  config_.validate();
  const int64_t d = config_.hidden_size, V = config_.vocab_size, L = config_.num_hidden_layers;
  embed_ = params_.add("model.embed_tokens.weight", {V, d});
  for (int64_t l = 0; l < L; ++l)
    layers_.push_back(std::make_unique<DecoderLayer<T>>(config_, params_, l, options.recompute_norms,
                                                        options.recompute_up_proj));
  norm_ = params_.add("model.norm.weight", {d});
  head_ = params_.add("lm_head.weight", {V, d});
  for (int64_t k = 0; k < config_.num_nextn_predict_layers; ++k) {
    const std::string prefix = "model.layers." + std::to_string(L + k) + ".";
    MtpHead m;
    m.enorm = params_.add(prefix + "enorm.weight", {d});
    m.hnorm = params_.add(prefix + "hnorm.weight", {d});
    m.eh_proj = params_.add(prefix + "eh_proj.weight", {d, 2 * d});
    layers_.push_back(std::make_unique<DecoderLayer<T>>(config_, params_, L + k, options.recompute_norms,
                                                        options.recompute_up_proj));
    m.norm = params_.add(prefix + "shared_head.norm.weight", {d});
    mtp_.push_back(m);
  }
}

template <class T>
Model<T>::~Model() = default;

template <class T>
void Model<T>::init_random(uint64_t seed, double std) {
  NormalRng rng(seed);
  for (auto& p : params_.all()) init_parameter(p->name, rng, std, p->value.data(), p->value.size());
  for (int64_t l : moe_layer_indices()) std::fill(expert_bias(l).begin(), expert_bias(l).end(), 0.0f);
}

template <class T>
void Model<T>::load_weights(const TensorMap& weights) {
  for (auto& p : params_.all()) {
    const HostTensor& t = tensor_at(weights, p->name);
    SY_REQUIRE(t.shape == p->shape, "model: weight \"" << p->name << "\" has " << t.shape.size()
                                                       << "-d shape of " << t.numel() << " elements, expected "
                                                       << p->numel());
    p->value = t.to_vector<T>();
  }
  for (int64_t l : moe_layer_indices()) {
    MoeBlock<T>* moe = moe_at(l);
    const HostTensor& t = tensor_at(weights, moe->bias_name());
    SY_REQUIRE(t.numel() == static_cast<int64_t>(moe->bias().size()),
               "model: \"" << moe->bias_name() << "\" has " << t.numel() << " elements, expected " << moe->bias().size());
    moe->bias() = t.to_vector<float>();
  }
}

template <class T>
TensorMap Model<T>::weights() const {
  TensorMap out;
  for (auto& p : params_.all()) out[p->name] = HostTensor::from_vector(p->value, p->shape);
  for (int64_t l : moe_layer_indices()) {
    MoeBlock<T>* moe = moe_at(l);
    out[moe->bias_name()] = HostTensor::from_vector(moe->bias(), {static_cast<int64_t>(moe->bias().size())});
  }
  return out;
}

template <class T>
TensorMap Model<T>::gradients() const {
  TensorMap out;
  for (auto& p : params_.all()) out["grad." + p->name] = HostTensor::from_vector(p->grad, p->shape);
  return out;
}

template <class T>
MoeBlock<T>* Model<T>::moe_at(int64_t layer) const {
  SY_REQUIRE(layer >= 0 && layer < num_layers() && layers_[layer]->moe() != nullptr,
             "model: layer " << layer << " is not a MoE layer");
  return layers_[layer]->moe();
}

template <class T>
std::vector<int64_t> Model<T>::moe_layer_indices() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < num_layers(); ++l)
    if (layers_[l]->moe()) out.push_back(l);
  return out;
}

template <class T>
const std::vector<double>& Model<T>::expert_counts(int64_t layer) const {
  return moe_at(layer)->expert_counts();
}

template <class T>
std::vector<float>& Model<T>::expert_bias(int64_t layer) {
  return moe_at(layer)->bias();
}

template <class T>
LoadStats Model<T>::expert_load(int64_t layer) const {
  const auto& c = expert_counts(layer);
  return load_stats(c.data(), static_cast<int64_t>(c.size()));
}

template <class T>
double Model<T>::min_routing_margin() const {
  double m = std::numeric_limits<double>::infinity();
  for (int64_t l : moe_layer_indices()) m = std::min(m, moe_at(l)->min_margin());
  return m;
}

template <class T>
void Model<T>::update_expert_biases(double rate) {
  for (int64_t l : moe_layer_indices()) {
    MoeBlock<T>* moe = moe_at(l);
    update_expert_bias(moe->bias().data(), moe->expert_counts().data(), config_.n_routed_experts, rate);
  }
}

template <class T>
void Model<T>::set_expert_provider(int64_t layer, std::unique_ptr<ExpertProvider<T>> provider) {
  SY_REQUIRE(provider != nullptr, "model: null expert provider for layer " << layer);
  moe_at(layer)->set_expert_provider(std::move(provider));
}

template <class T>
const std::vector<T>& Model<T>::mtp_logits(int64_t k) const {
  SY_REQUIRE(k >= 1 && k <= static_cast<int64_t>(mtp_logits_.size()),
             "model: MTP module " << k << " out of range [1, " << mtp_logits_.size() << "]");
  return mtp_logits_[k - 1];
}

template <class T>
void Model<T>::stage_begin(const int64_t* tokens, int64_t batch, int64_t seq_len) {
  const ModelConfig& c = config_;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  SY_REQUIRE(batch >= 1 && seq_len >= 1, "model: batch = " << batch << " and seq_len = " << seq_len
                                                           << " must be at least 1");
  SY_REQUIRE(seq_len <= c.max_position_embeddings,
             "model: seq_len = " << seq_len << " exceeds max_position_embeddings = " << c.max_position_embeddings);
  B_ = batch, T_ = seq_len, N_ = batch * seq_len;
  const int64_t W = seq_len + D + 1;
  ids_.resize((D + 1) * N_);
  targets_.resize((D + 1) * N_);
  for (int64_t b = 0; b < B_; ++b)
    for (int64_t i = 0; i < W; ++i) {
      int64_t t = tokens[b * W + i];
      SY_REQUIRE(t >= 0 && t < V, "model: tokens[" << b << ", " << i << "] = " << t << " is outside [0, " << V << ")");
    }
  for (int64_t m = 0; m <= D; ++m)
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t i = 0; i < T_; ++i) {
        ids_[m * N_ + b * T_ + i] = tokens[b * W + i + m];
        targets_[m * N_ + b * T_ + i] = tokens[b * W + i + m + 1];
      }
  const RopeScaling& rs = c.rope_scaling;
  if (!rope_ || rope_->seq_len != T_) {  // depends only on the config and seq_len
    rope_ = std::make_unique<kernels::RopeTable>(kernels::make_rope_table(
        T_, c.qk_rope_head_dim, c.rope_theta, rs.enabled, rs.factor, rs.original_max_position_embeddings,
        rs.beta_fast, rs.beta_slow, rs.mscale, rs.mscale_all_dim));
  }
  hidden_.resize(L + 1);
  for (auto& h : hidden_) h.resize(N_ * d);
  losses_ = Losses{};
  grads_taken_ = false;
  head_w_.clear();
}

template <class T>
void Model<T>::check_range(int64_t first, int64_t last) const {
  SY_REQUIRE(0 <= first && first <= last && last <= config_.num_hidden_layers,
             "model: layer range [" << first << ", " << last << ") is not inside [0, " << config_.num_hidden_layers
                                    << "]");
  SY_REQUIRE(N_ > 0, "model: stage piece called before stage_begin");
}

template <class T>
void Model<T>::embed_forward(T* h_out) {
  check_range(0, 0);
  const int64_t d = config_.hidden_size;
  T* out = hidden_[0].data();
  for (int64_t n = 0; n < N_; ++n) std::memcpy(&out[n * d], &embed_->value[ids_[n] * d], d * sizeof(T));
  if (h_out != out) std::memcpy(h_out, out, N_ * d * sizeof(T));
}

template <class T>
void Model<T>::layers_forward(int64_t first, int64_t last, const T* h_in, T* h_out) {
  check_range(first, last);
  const int64_t d = config_.hidden_size;
  if (h_in != hidden_[first].data()) std::memcpy(hidden_[first].data(), h_in, N_ * d * sizeof(T));
  for (int64_t l = first; l < last; ++l)
    layers_[l]->forward(hidden_[l].data(), B_, T_, *rope_, hidden_[l + 1].data());
  if (h_out != hidden_[last].data()) std::memcpy(h_out, hidden_[last].data(), N_ * d * sizeof(T));
}

template <class T>
Losses Model<T>::head_forward(const T* h_in) {
  const int64_t L = config_.num_hidden_layers, D = config_.num_nextn_predict_layers;
  check_range(L, L);
  if (h_in != hidden_[L].data()) std::memcpy(hidden_[L].data(), h_in, N_ * config_.hidden_size * sizeof(T));
  run_head_forward();
  Losses out = losses_;
  out.balance = balance_loss(L, L + D);
  out.total = out.main + config_.aux_loss_alpha * out.balance;
  for (double x : out.mtp) out.total += config_.mtp_loss_lambda / D * x;
  return out;
}

// Final norm, head, MTP modules and their losses from hidden_[L] (losses_.main, .mtp).
template <class T>
void Model<T>::run_head_forward() {
  const ModelConfig& c = config_;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  const kernels::RopeTable& rope = *rope_;
  auto embed = [&](const int64_t* ids, std::vector<T>& out) {
    out.resize(N_ * d);
    for (int64_t n = 0; n < N_; ++n) std::memcpy(&out[n * d], &embed_->value[ids[n] * d], d * sizeof(T));
  };
  hn_.resize(N_ * d);
  logits_.resize(N_ * V);
  kernels::rmsnorm_forward(hidden_[L].data(), d, norm_->value.data(), N_, d, c.rms_norm_eps, hn_.data(), (T*)nullptr);
  kernels::linear_forward(hn_.data(), head_->value.data(), N_, d, V, logits_.data());
  losses_ = Losses{};
  grads_taken_ = false;
  dlogits_.resize(N_ * V);  // softmax now, dlogits after backward
  losses_.main = kernels::cross_entropy_forward(logits_.data(), targets_.data(), N_, V, dlogits_.data());

  for (auto* v : {&mtp_emb_, &mtp_cat_, &mtp_x_, &mtp_h_, &mtp_hn_, &mtp_logits_, &mtp_dlogits_}) v->resize(D);
  std::vector<T>& tmp = demb_;  // scratch [N, d]
  tmp.resize(N_ * d);
  for (int64_t k = 0; k < D; ++k) {
    const MtpHead& m = mtp_[k];
    const std::vector<T>& prev = k == 0 ? hidden_[L] : mtp_h_[k - 1];
    embed(&ids_[(k + 1) * N_], mtp_emb_[k]);
    auto& cat = mtp_cat_[k];
    cat.resize(N_ * 2 * d);
    // [enorm(embedding), hnorm(hidden)]: the released checkpoints' order.
    kernels::rmsnorm_forward(mtp_emb_[k].data(), d, m.enorm->value.data(), N_, d, c.rms_norm_eps, tmp.data(), (T*)nullptr);
    for (int64_t n = 0; n < N_; ++n) std::memcpy(&cat[n * 2 * d], &tmp[n * d], d * sizeof(T));
    kernels::rmsnorm_forward(prev.data(), d, m.hnorm->value.data(), N_, d, c.rms_norm_eps, tmp.data(), (T*)nullptr);
    for (int64_t n = 0; n < N_; ++n) std::memcpy(&cat[n * 2 * d + d], &tmp[n * d], d * sizeof(T));
    mtp_x_[k].resize(N_ * d);
    kernels::linear_forward(cat.data(), m.eh_proj->value.data(), N_, 2 * d, d, mtp_x_[k].data());
    mtp_h_[k].resize(N_ * d);
    layers_[L + k]->forward(mtp_x_[k].data(), B_, T_, rope, mtp_h_[k].data());
    mtp_hn_[k].resize(N_ * d);
    mtp_logits_[k].resize(N_ * V);
    kernels::rmsnorm_forward(mtp_h_[k].data(), d, m.norm->value.data(), N_, d, c.rms_norm_eps, mtp_hn_[k].data(), (T*)nullptr);
    kernels::linear_forward(mtp_hn_[k].data(), head_->value.data(), N_, d, V, mtp_logits_[k].data());
    mtp_dlogits_[k].resize(N_ * V);
    losses_.mtp.push_back(kernels::cross_entropy_forward(mtp_logits_[k].data(), &targets_[(k + 1) * N_], N_, V,
                                                         mtp_dlogits_[k].data()));
  }
}

template <class T>
double Model<T>::balance_loss(int64_t first, int64_t last) const {
  double s = 0;
  for (int64_t l = std::max<int64_t>(first, 0); l < std::min(last, num_layers()); ++l)
    if (layers_[l]->moe()) s += layers_[l]->moe()->balance_loss();
  return s;
}

template <class T>
Losses Model<T>::forward(const int64_t* tokens, int64_t batch, int64_t seq_len) {
  const ModelConfig& c = config_;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers;
  stage_begin(tokens, batch, seq_len);
  embed_forward(hidden_[0].data());
  layers_forward(0, L, hidden_[0].data(), hidden_[L].data());
  run_head_forward();
  for (int64_t l : moe_layer_indices()) losses_.balance += moe_at(l)->balance_loss();
  losses_.total = losses_.main + c.aux_loss_alpha * losses_.balance;
  for (double x : losses_.mtp) losses_.total += c.mtp_loss_lambda / D * x;
  return losses_;
}

template <class T>
void Model<T>::ensure_grad_buffers() {
  const int64_t L = config_.num_hidden_layers, d = config_.hidden_size;
  dhidden_.resize(L + 1);
  for (auto& v : dhidden_) v.resize(N_ * d);
}

// Head and MTP modules backward from the losses: sets dhidden_[L].
template <class T>
void Model<T>::run_head_backward(WorkList* deferred) {
  const ModelConfig& c = config_;
  const int64_t D = c.num_nextn_predict_layers, L = c.num_hidden_layers, d = c.hidden_size, V = c.vocab_size;
  const double eps = c.rms_norm_eps, alpha = c.aux_loss_alpha;
  SY_REQUIRE(N_ > 0, "model: backward called before forward");
  auto schedule_w = [&](std::function<void()> w) {
    if (deferred)
      deferred->push_back(std::move(w));
    else
      w();
  };

  // Main head and final norm.
  SY_REQUIRE(!grads_taken_, "model: backward called twice after one forward");
  grads_taken_ = true;
  kernels::cross_entropy_backward(dlogits_.data(), targets_.data(), N_, V, 1.0);
  dhn_.resize(N_ * d);
  kernels::linear_backward_input(dlogits_.data(), head_->value.data(), N_, d, V, dhn_.data(), false);
  ensure_grad_buffers();
  kernels::rmsnorm_backward_input(hidden_[L].data(), d, norm_->value.data(), dhn_.data(), N_, d, eps,
                                  dhidden_[L].data(), d, false);
  schedule_w([this, d, V, eps, L] {
    kernels::linear_backward_weight(dlogits_.data(), hn_.data(), N_, d, V, head_->grad.data());
    kernels::rmsnorm_backward_weight(hidden_[L].data(), d, dhn_.data(), N_, d, eps, norm_->grad.data());
  });

  // MTP modules, last first: each feeds the gradient of its input hidden state backwards.
  for (auto* v : {&mtp_dh_, &mtp_dx_, &mtp_dcat_}) v->resize(D);
  for (auto* v : {&mtp_dhn_, &mtp_de_, &mtp_dhh_}) v->resize(D);
  auto& dhn_mtp = mtp_dhn_;
  auto& de = mtp_de_;
  auto& dhh = mtp_dhh_;
  for (int64_t k = 0; k < D; ++k) mtp_dh_[k].assign(N_ * d, T(0));
  for (int64_t k = D - 1; k >= 0; --k) {
    const MtpHead& m = mtp_[k];
    const std::vector<T>& prev = k == 0 ? hidden_[L] : mtp_h_[k - 1];
    std::vector<T>& dprev = k == 0 ? dhidden_[L] : mtp_dh_[k - 1];
    kernels::cross_entropy_backward(mtp_dlogits_[k].data(), &targets_[(k + 1) * N_], N_, V, c.mtp_loss_lambda / D);
    dhn_mtp[k].resize(N_ * d);
    kernels::linear_backward_input(mtp_dlogits_[k].data(), head_->value.data(), N_, d, V, dhn_mtp[k].data(), false);
    kernels::rmsnorm_backward_input(mtp_h_[k].data(), d, m.norm->value.data(), dhn_mtp[k].data(), N_, d, eps,
                                    mtp_dh_[k].data(), d, true);
    mtp_dx_[k].resize(N_ * d);
    layers_[L + k]->backward_input(mtp_dh_[k].data(), mtp_dx_[k].data(), alpha);
    schedule_w([this, L, k] { layers_[L + k]->backward_weight(); });
    mtp_dcat_[k].resize(N_ * 2 * d);
    kernels::linear_backward_input(mtp_dx_[k].data(), m.eh_proj->value.data(), N_, 2 * d, d, mtp_dcat_[k].data(),
                                   false);
    de[k].resize(N_ * d);
    dhh[k].resize(N_ * d);
    for (int64_t n = 0; n < N_; ++n) {
      std::memcpy(&de[k][n * d], &mtp_dcat_[k][n * 2 * d], d * sizeof(T));
      std::memcpy(&dhh[k][n * d], &mtp_dcat_[k][n * 2 * d + d], d * sizeof(T));
    }
    kernels::rmsnorm_backward_input(prev.data(), d, m.hnorm->value.data(), dhh[k].data(), N_, d, eps, dprev.data(), d,
                                    true);
    schedule_w([this, k, d, V, eps, L] {
      const MtpHead& mh = mtp_[k];
      const std::vector<T>& pv = k == 0 ? hidden_[L] : mtp_h_[k - 1];
      kernels::linear_backward_weight(mtp_dlogits_[k].data(), mtp_hn_[k].data(), N_, d, V, head_->grad.data());
      kernels::rmsnorm_backward_weight(mtp_h_[k].data(), d, mtp_dhn_[k].data(), N_, d, eps, mh.norm->grad.data());
      kernels::linear_backward_weight(mtp_dx_[k].data(), mtp_cat_[k].data(), N_, 2 * d, d, mh.eh_proj->grad.data());
      kernels::rmsnorm_backward_weight(pv.data(), d, mtp_dhh_[k].data(), N_, d, eps, mh.hnorm->grad.data());
      kernels::rmsnorm_backward_weight(mtp_emb_[k].data(), d, mtp_de_[k].data(), N_, d, eps, mh.enorm->grad.data());
      // The embedding gradient of this module's token lookup.
      std::vector<T>& demb = demb_;
      demb.resize(N_ * d);
      kernels::rmsnorm_backward_input(mtp_emb_[k].data(), d, mh.enorm->value.data(), mtp_de_[k].data(), N_, d, eps,
                                      demb.data(), d, false);
      const int64_t* ids = &ids_[(k + 1) * N_];
      for (int64_t n = 0; n < N_; ++n) {
        T* g = &embed_->grad[ids[n] * d];
        for (int64_t j = 0; j < d; ++j) g[j] += demb[n * d + j];
      }
    });
  }
}

// Main layers [first, last), last first: dhidden_[last] -> dhidden_[first].
template <class T>
void Model<T>::run_layers_backward(int64_t first, int64_t last, WorkList* deferred) {
  const double alpha = config_.aux_loss_alpha;
  for (int64_t l = last - 1; l >= first; --l) {
    layers_[l]->backward_input(dhidden_[l + 1].data(), dhidden_[l].data(), alpha);
    if (deferred)
      deferred->push_back([this, l] { layers_[l]->backward_weight(); });
    else
      layers_[l]->backward_weight();
  }
}

// Embedding gradient of the main stack's lookup from dhidden_[0].
template <class T>
void Model<T>::run_embed_backward() {
  const int64_t d = config_.hidden_size;
  for (int64_t n = 0; n < N_; ++n) {
    T* g = &embed_->grad[ids_[n] * d];
    for (int64_t j = 0; j < d; ++j) g[j] += dhidden_[0][n * d + j];
  }
}

template <class T>
void Model<T>::backward(BackwardOrder order) {
  const int64_t L = config_.num_hidden_layers;
  WorkList pending;  // weight-gradient (W) work
  WorkList* deferred = order == BackwardOrder::kInputFirst ? &pending : nullptr;
  run_head_backward(deferred);
  run_layers_backward(0, L, deferred);
  if (deferred)
    pending.push_back([this] { run_embed_backward(); });
  else
    run_embed_backward();
  for (auto& w : pending) w();
}

template <class T>
void Model<T>::head_backward_input(T* dh_in) {
  const int64_t L = config_.num_hidden_layers;
  check_range(L, L);
  head_w_.clear();
  run_head_backward(&head_w_);
  if (dh_in != dhidden_[L].data()) std::memcpy(dh_in, dhidden_[L].data(), N_ * config_.hidden_size * sizeof(T));
}

template <class T>
void Model<T>::head_backward_weight() {
  for (auto& w : head_w_) w();
  head_w_.clear();
}

template <class T>
void Model<T>::layers_backward_input(int64_t first, int64_t last, const T* dh_out, T* dh_in) {
  check_range(first, last);
  ensure_grad_buffers();
  const int64_t d = config_.hidden_size;
  if (dh_out != dhidden_[last].data()) std::memcpy(dhidden_[last].data(), dh_out, N_ * d * sizeof(T));
  const double alpha = config_.aux_loss_alpha;
  for (int64_t l = last - 1; l >= first; --l)
    layers_[l]->backward_input(dhidden_[l + 1].data(), dhidden_[l].data(), alpha);
  if (dh_in && dh_in != dhidden_[first].data()) std::memcpy(dh_in, dhidden_[first].data(), N_ * d * sizeof(T));
}

template <class T>
void Model<T>::layers_backward_weight(int64_t first, int64_t last) {
  check_range(first, last);
  for (int64_t l = last - 1; l >= first; --l) layers_[l]->backward_weight();
}

template <class T>
void Model<T>::embed_backward(const T* dh) {
  check_range(0, 0);
  ensure_grad_buffers();
  if (dh && dh != dhidden_[0].data()) std::memcpy(dhidden_[0].data(), dh, N_ * config_.hidden_size * sizeof(T));
  run_embed_backward();
}

template class Model<float>;
template class Model<double>;

}  // namespace switchyard::trainer
