// DeepSeekMoE block forward and split backward (see moe.h).
#include "moe.h"

#include <cmath>
#include <limits>

#include "kernels.h"
#include "switchyard/common/error.h"

namespace switchyard::trainer {

template <class T>
MoeBlock<T>::MoeBlock(const ModelConfig& c, ParameterSet<T>& params, const std::string& prefix)
    : d_(c.hidden_size), E_(c.n_routed_experts), K_(c.num_experts_per_tok) {
  router_ = RouterConfig{c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group,
                         c.routed_scaling_factor, c.norm_topk_prob};
  gate_ = params.add(prefix + "gate.weight", {E_, d_});
  bias_.assign(E_, 0.0f);
  bias_name_ = prefix + "gate.e_score_correction_bias";
  const int64_t f = c.moe_intermediate_size;
  std::vector<SwiGlu<T>> experts;
  for (int64_t e = 0; e < E_; ++e) {
    std::string p = prefix + "experts." + std::to_string(e) + ".";
    auto* g = params.add(p + "gate_proj.weight", {f, d_});
    auto* u = params.add(p + "up_proj.weight", {f, d_});
    auto* dn = params.add(p + "down_proj.weight", {d_, f});
    experts.emplace_back(g, u, dn, d_, f);
  }
  experts_ = std::make_unique<LocalExperts<T>>(std::move(experts), d_);
  if (c.n_shared_experts > 0) {
    const int64_t fs = f * c.n_shared_experts;
    std::string p = prefix + "shared_experts.";
    auto* g = params.add(p + "gate_proj.weight", {fs, d_});
    auto* u = params.add(p + "up_proj.weight", {fs, d_});
    auto* dn = params.add(p + "down_proj.weight", {d_, fs});
    shared_ = std::make_unique<SwiGlu<T>>(g, u, dn, d_, fs);
  }
}

template <class T>
void MoeBlock<T>::forward(const T* x, int64_t batch, int64_t seq_len, T* y) {
  B_ = batch, T_ = seq_len, N_ = batch * seq_len;
  x_ = x;
  scores_.resize(N_ * E_);
  kernels::linear_forward(x, gate_->value.data(), N_, d_, E_, scores_.data());
  for (auto& s : scores_) s = T(1) / (T(1) + std::exp(-s));
  std::vector<int64_t> idx(N_ * K_);
  topk_weight_.resize(N_ * K_);
  route_group_limited(router_, scores_.data(), bias_.data(), N_, idx.data(), topk_weight_.data(), &min_margin_);
  plan_ = make_routing_plan(idx.data(), N_, K_, E_);
  counts_.assign(E_, 0.0);
  for (int64_t e = 0; e < E_; ++e) counts_[e] = double(plan_.expert_offset[e + 1] - plan_.expert_offset[e]);

  // Sequence-wise balance loss: f_i = E/(K T) #{t: i in plain top-K of s_t}, P_i = mean_t s_it / sum_j s_jt.
  f_.assign(B_ * E_, 0.0);
  balance_loss_ = 0;
  std::vector<int64_t> top(K_);
  for (int64_t b = 0; b < B_; ++b) {
    std::vector<double> P(E_, 0.0);
    for (int64_t t = b * T_; t < (b + 1) * T_; ++t) {
      const T* s = &scores_[t * E_];
      min_margin_ = std::min(min_margin_, plain_topk(s, E_, K_, top.data()));
      for (int64_t k = 0; k < K_; ++k) f_[b * E_ + top[k]] += double(E_) / double(K_ * T_);
      double sum = 0;
      for (int64_t e = 0; e < E_; ++e) sum += double(s[e]);
      for (int64_t e = 0; e < E_; ++e) P[e] += double(s[e]) / sum / double(T_);
    }
    for (int64_t e = 0; e < E_; ++e) balance_loss_ += f_[b * E_ + e] * P[e] / double(B_);
  }

  // Fused form first (the provider applies the gate weights), else one output per assignment.
  expert_out_.resize(N_ * d_);
  weighted_ = experts_->forward_weighted(plan_, x, topk_weight_.data(), expert_out_.data());
  if (!weighted_) {
    expert_out_.resize(N_ * K_ * d_);
    experts_->forward(plan_, x, expert_out_.data());
  }
  if (shared_) {
    shared_->forward(x, N_, y);
  } else {
    std::fill(y, y + N_ * d_, T(0));
  }
  if (weighted_) {
    for (int64_t i = 0; i < N_ * d_; ++i) y[i] += expert_out_[i];
    return;
  }
  for (int64_t n = 0; n < N_; ++n) {
    T* yn = y + n * d_;
    for (int64_t k = 0; k < K_; ++k) {
      const T w = topk_weight_[n * K_ + k];
      const T* o = &expert_out_[(n * K_ + k) * d_];
      for (int64_t j = 0; j < d_; ++j) yn[j] += w * o[j];
    }
  }
}

template <class T>
void MoeBlock<T>::backward_input(const T* dy, const T* x, T* dx, double balance_coef) {
  x_ = x;
  if (shared_) {
    shared_->backward_input(dy, x, dx, false);
  } else {
    std::fill(dx, dx + N_ * d_, T(0));
  }
  // Routed experts: d_out = w * dy; dw = <dy, out> (by the provider in the fused form).
  dw_.resize(N_ * K_);
  std::vector<T>& dw = dw_;
  if (weighted_) {
    SY_CHECK(experts_->backward_weighted(plan_, dy, dx, dw.data()));
  } else {
    backward_per_assignment(dy, dx);
  }
  route_backward(dx, balance_coef);
}

template <class T>
void MoeBlock<T>::backward_per_assignment(const T* dy, T* dx) {
  d_expert_out_.resize(N_ * K_ * d_);
  std::vector<T>& dw = dw_;
  for (int64_t n = 0; n < N_; ++n) {
    const T* dyn = dy + n * d_;
    for (int64_t k = 0; k < K_; ++k) {
      const T w = topk_weight_[n * K_ + k];
      const T* o = &expert_out_[(n * K_ + k) * d_];
      T* dout = &d_expert_out_[(n * K_ + k) * d_];
      T dot = 0;
      for (int64_t j = 0; j < d_; ++j) {
        dot += dyn[j] * o[j];
        dout[j] = w * dyn[j];
      }
      dw[n * K_ + k] = dot;
    }
  }
  experts_->backward_input(plan_, d_expert_out_.data(), dx);
}

template <class T>
void MoeBlock<T>::route_backward(T* dx, double balance_coef) {
  const std::vector<T>& dw = dw_;
  // Router: w_k = c s_k / S over the selected set; balance loss through s' = s / sum(s).
  ds_.assign(N_ * E_, T(0));
  std::vector<T>& ds = ds_;
  const double c = router_.route_scale;
  for (int64_t n = 0; n < N_; ++n) {
    const T* s = &scores_[n * E_];
    T* dsn = &ds[n * E_];
    const int64_t* sel = &plan_.topk_idx[n * K_];
    if (router_.normalize) {
      double S = 0, dot = 0;
      for (int64_t k = 0; k < K_; ++k) S += double(s[sel[k]]);
      for (int64_t k = 0; k < K_; ++k) dot += double(dw[n * K_ + k]) * double(s[sel[k]]);
      for (int64_t k = 0; k < K_; ++k) dsn[sel[k]] += T(c * (double(dw[n * K_ + k]) / S - dot / (S * S)));
    } else {
      for (int64_t k = 0; k < K_; ++k) dsn[sel[k]] += T(c * double(dw[n * K_ + k]));
    }
    if (balance_coef != 0) {
      const int64_t b = n / T_;
      double S = 0, dot = 0;
      for (int64_t e = 0; e < E_; ++e) S += double(s[e]);
      // g_i = coef * f_i / (T B) on s'_i; ds_j = (g_j - sum_i g_i s'_i) / S.
      const double g0 = balance_coef / double(T_ * B_);
      for (int64_t e = 0; e < E_; ++e) dot += g0 * f_[b * E_ + e] * double(s[e]) / S;
      for (int64_t e = 0; e < E_; ++e) dsn[e] += T((g0 * f_[b * E_ + e] - dot) / S);
    }
  }
  dlogits_.resize(N_ * E_);
  for (int64_t i = 0; i < N_ * E_; ++i) dlogits_[i] = ds[i] * scores_[i] * (T(1) - scores_[i]);
  kernels::linear_backward_input(dlogits_.data(), gate_->value.data(), N_, d_, E_, dx, true);
}

template <class T>
void MoeBlock<T>::backward_weight() {
  kernels::linear_backward_weight(dlogits_.data(), x_, N_, d_, E_, gate_->grad.data());
  if (shared_) shared_->backward_weight();
  experts_->backward_weight();
}

template <class T>
void MoeBlock<T>::release() {
  if (shared_) shared_->release();
  experts_->release();
  for (auto* v : {&scores_, &topk_weight_, &expert_out_, &d_expert_out_, &dlogits_}) std::vector<T>().swap(*v);
  x_ = nullptr;
  weighted_ = false;
}

template class MoeBlock<float>;
template class MoeBlock<double>;

}  // namespace switchyard::trainer
