// Multi-head latent attention forward and split backward (see mla.h).
#include "mla.h"

#include <algorithm>
#include <cmath>

namespace switchyard::trainer {
namespace {
// Causal attention runs in row blocks of this many queries; block r only touches keys
// 0 .. end of the block, so about half of the T x T products are skipped.
constexpr int64_t kRowBlock = 64;
}  // namespace

template <class T>
Mla<T>::Mla(const ModelConfig& c, ParameterSet<T>& params, const std::string& prefix, bool recompute_norms,
            bool recompute_up_proj)
    : d_(c.hidden_size),
      H_(c.num_attention_heads),
      rq_(c.q_lora_rank),
      rkv_(c.kv_lora_rank),
      dn_(c.qk_nope_head_dim),
      dr_(c.qk_rope_head_dim),
      dv_(c.v_head_dim),
      dqk_(c.qk_head_dim()),
      eps_(c.rms_norm_eps),
      scale_(c.softmax_scale()),
      recompute_norms_(recompute_norms),
      recompute_up_proj_(recompute_up_proj) {
  q_a_ = params.add(prefix + "q_a_proj.weight", {rq_, d_});
  q_a_norm_ = params.add(prefix + "q_a_layernorm.weight", {rq_});
  q_b_ = params.add(prefix + "q_b_proj.weight", {H_ * dqk_, rq_});
  kv_a_ = params.add(prefix + "kv_a_proj_with_mqa.weight", {rkv_ + dr_, d_});
  kv_a_norm_ = params.add(prefix + "kv_a_layernorm.weight", {rkv_});
  kv_b_ = params.add(prefix + "kv_b_proj.weight", {H_ * (dn_ + dv_), rkv_});
  o_ = params.add(prefix + "o_proj.weight", {d_, H_ * dv_});
}

template <class T>
void Mla<T>::compute_latents() {
  cq_.resize(N_ * rq_);
  ckv_.resize(N_ * rkv_);
  kernels::rmsnorm_forward(cq_raw_.data(), rq_, q_a_norm_->value.data(), N_, rq_, eps_, cq_.data(), (T*)nullptr);
  kernels::rmsnorm_forward(a_.data(), rkv_ + dr_, kv_a_norm_->value.data(), N_, rkv_, eps_, ckv_.data(), (T*)nullptr);
}

template <class T>
void Mla<T>::compute_up_proj() {
  q_.resize(N_ * H_ * dqk_);
  kv_.resize(N_ * H_ * (dn_ + dv_));
  kernels::linear_forward(cq_.data(), q_b_->value.data(), N_, rq_, H_ * dqk_, q_.data());
  kernels::linear_forward(ckv_.data(), kv_b_->value.data(), N_, rkv_, H_ * (dn_ + dv_), kv_.data());
  for (int64_t n = 0; n < N_; ++n) {
    for (int64_t h = 0; h < H_; ++h) {
      T* pe = &q_[(n * H_ + h) * dqk_ + dn_];
      kernels::rope_apply(*rope_, n % T_, pe, pe, false);
    }
  }
}

template <class T>
void Mla<T>::forward(const T* x, int64_t batch, int64_t seq_len, const kernels::RopeTable& rope, T* u) {
  B_ = batch, T_ = seq_len, N_ = batch * seq_len;
  rope_ = &rope;
  x_ = x;
  cq_raw_.resize(N_ * rq_);
  a_.resize(N_ * (rkv_ + dr_));
  kpe_.resize(N_ * dr_);
  kernels::linear_forward(x, q_a_->value.data(), N_, d_, rq_, cq_raw_.data());
  kernels::linear_forward(x, kv_a_->value.data(), N_, d_, rkv_ + dr_, a_.data());
  for (int64_t n = 0; n < N_; ++n)
    kernels::rope_apply(rope, n % T_, &a_[n * (rkv_ + dr_) + rkv_], &kpe_[n * dr_], false);
  compute_latents();
  compute_up_proj();

  // Attention per (sequence, head): S = scale (Qn Kn^T + Qp Kp^T), causal softmax, O = P V.
  const int64_t ldq = H_ * dqk_, ldkv = H_ * (dn_ + dv_), ldo = H_ * dv_;
  p_.resize(B_ * H_ * T_ * T_);
  o_out_.resize(N_ * ldo);
  for (int64_t b = 0; b < B_; ++b) {
    for (int64_t h = 0; h < H_; ++h) {
      T* P = &p_[(b * H_ + h) * T_ * T_];
      const T* qn = &q_[b * T_ * ldq + h * dqk_];
      const T* kn = &kv_[b * T_ * ldkv + h * (dn_ + dv_)];
      const T* v = kn + dn_;
      const T* kp = &kpe_[b * T_ * dr_];
      T* o = &o_out_[b * T_ * ldo + h * dv_];
      // Rows r0..r1-1 see keys 0..r1-1; P columns beyond r1 of these rows are never read.
      for (int64_t r0 = 0; r0 < T_; r0 += kRowBlock) {
        const int64_t r1 = std::min(T_, r0 + kRowBlock), m = r1 - r0;
        T* Pr = P + r0 * T_;
        kernels::gemm<T>(false, true, m, r1, dn_, T(scale_), qn + r0 * ldq, ldq, kn, ldkv, T(0), Pr, T_);
        kernels::gemm<T>(false, true, m, r1, dr_, T(scale_), qn + r0 * ldq + dn_, ldq, kp, dr_, T(1), Pr, T_);
        for (int64_t i = r0; i < r1; ++i) {
          T* row = P + i * T_;
          T mx = *std::max_element(row, row + i + 1);
          T sum = 0;
          for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - mx));
          T inv = T(1) / sum;
          for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
          std::fill(row + i + 1, row + r1, T(0));
        }
        kernels::gemm<T>(false, false, m, dv_, r1, T(1), Pr, T_, v, ldkv, T(0), o + r0 * ldo, ldo);
      }
    }
  }
  kernels::linear_forward(o_out_.data(), o_->value.data(), N_, H_ * dv_, d_, u);
  if (recompute_up_proj_) {
    std::vector<T>().swap(q_);
    std::vector<T>().swap(kv_);
  }
  if (recompute_norms_) {
    std::vector<T>().swap(cq_);
    std::vector<T>().swap(ckv_);
  }
}

template <class T>
void Mla<T>::backward_input(const T* du, const T* x, T* dx) {
  x_ = x;
  du_ = du;
  if (cq_.empty() || ckv_.empty()) compute_latents();
  if (q_.empty() || kv_.empty()) compute_up_proj();
  const int64_t ldq = H_ * dqk_, ldkv = H_ * (dn_ + dv_), ldo = H_ * dv_;
  do_.resize(N_ * ldo);
  kernels::linear_backward_input(du, o_->value.data(), N_, H_ * dv_, d_, do_.data(), false);

  dq_.resize(N_ * ldq);  // every element is written by the beta = 0 GEMMs below
  dkv_.assign(N_ * ldkv, T(0));  // accumulated over row blocks
  dkpe_.assign(N_ * dr_, T(0));
  dP_.resize(T_ * T_);
  std::vector<T>& dkpe = dkpe_;
  std::vector<T>& dP = dP_;
  for (int64_t b = 0; b < B_; ++b) {
    for (int64_t h = 0; h < H_; ++h) {
      const T* P = &p_[(b * H_ + h) * T_ * T_];
      const T* qn = &q_[b * T_ * ldq + h * dqk_];
      const T* kn = &kv_[b * T_ * ldkv + h * (dn_ + dv_)];
      const T* v = kn + dn_;
      const T* dO = &do_[b * T_ * ldo + h * dv_];
      T* dqn = &dq_[b * T_ * ldq + h * dqk_];
      T* dkn = &dkv_[b * T_ * ldkv + h * (dn_ + dv_)];
      T* dvh = dkn + dn_;
      const T* kp = &kpe_[b * T_ * dr_];
      T* dkp = &dkpe[b * T_ * dr_];
      // Per row block (rows r0..r1-1, keys 0..r1-1): dP = dO V^T; dV += P^T dO;
      // dS = P * (dP - rowsum(dP * P)) * scale; dQ = dS K; dK += dS^T Q (the shared rope
      // key sums over heads too).
      for (int64_t r0 = 0; r0 < T_; r0 += kRowBlock) {
        const int64_t r1 = std::min(T_, r0 + kRowBlock), m = r1 - r0;
        const T* Pr = P + r0 * T_;
        T* dS = dP.data() + r0 * T_;
        kernels::gemm<T>(false, true, m, r1, dv_, T(1), dO + r0 * ldo, ldo, v, ldkv, T(0), dS, T_);
        kernels::gemm<T>(true, false, r1, dv_, m, T(1), Pr, T_, dO + r0 * ldo, ldo, T(1), dvh, ldkv);
        for (int64_t i = r0; i < r1; ++i) {
          T* dpr = &dP[i * T_];
          const T* pr = P + i * T_;
          T dot = 0;
          for (int64_t j = 0; j <= i; ++j) dot += dpr[j] * pr[j];
          for (int64_t j = 0; j <= i; ++j) dpr[j] = pr[j] * (dpr[j] - dot) * T(scale_);
          std::fill(dpr + i + 1, dpr + r1, T(0));
        }
        kernels::gemm<T>(false, false, m, dn_, r1, T(1), dS, T_, kn, ldkv, T(0), dqn + r0 * ldq, ldq);
        kernels::gemm<T>(false, false, m, dr_, r1, T(1), dS, T_, kp, dr_, T(0), dqn + r0 * ldq + dn_, ldq);
        kernels::gemm<T>(true, false, r1, dn_, m, T(1), dS, T_, qn + r0 * ldq, ldq, T(1), dkn, ldkv);
        kernels::gemm<T>(true, false, r1, dr_, m, T(1), dS, T_, qn + r0 * ldq + dn_, ldq, T(1), dkp, dr_);
      }
    }
  }
  // RoPE backward: rotate by minus the angle.
  for (int64_t n = 0; n < N_; ++n)
    for (int64_t h = 0; h < H_; ++h) {
      T* pe = &dq_[(n * H_ + h) * dqk_ + dn_];
      kernels::rope_apply(*rope_, n % T_, pe, pe, true);
    }
  // Up-projections and latent norms.
  dcq_.resize(N_ * rq_);
  kernels::linear_backward_input(dq_.data(), q_b_->value.data(), N_, rq_, H_ * dqk_, dcq_.data(), false);
  dcq_raw_.resize(N_ * rq_);
  kernels::rmsnorm_backward_input(cq_raw_.data(), rq_, q_a_norm_->value.data(), dcq_.data(), N_, rq_, eps_,
                                  dcq_raw_.data(), rq_, false);
  dckv_.resize(N_ * rkv_);
  kernels::linear_backward_input(dkv_.data(), kv_b_->value.data(), N_, rkv_, ldkv, dckv_.data(), false);
  da_.resize(N_ * (rkv_ + dr_));
  kernels::rmsnorm_backward_input(a_.data(), rkv_ + dr_, kv_a_norm_->value.data(), dckv_.data(), N_, rkv_, eps_,
                                  da_.data(), rkv_ + dr_, false);
  for (int64_t n = 0; n < N_; ++n)
    kernels::rope_apply(*rope_, n % T_, &dkpe[n * dr_], &da_[n * (rkv_ + dr_) + rkv_], true);
  kernels::linear_backward_input(dcq_raw_.data(), q_a_->value.data(), N_, d_, rq_, dx, false);
  kernels::linear_backward_input(da_.data(), kv_a_->value.data(), N_, d_, rkv_ + dr_, dx, true);
}

template <class T>
void Mla<T>::backward_weight() {
  kernels::linear_backward_weight(du_, o_out_.data(), N_, H_ * dv_, d_, o_->grad.data());
  kernels::linear_backward_weight(dq_.data(), cq_.data(), N_, rq_, H_ * dqk_, q_b_->grad.data());
  kernels::linear_backward_weight(dkv_.data(), ckv_.data(), N_, rkv_, H_ * (dn_ + dv_), kv_b_->grad.data());
  kernels::rmsnorm_backward_weight(cq_raw_.data(), rq_, dcq_.data(), N_, rq_, eps_, q_a_norm_->grad.data());
  kernels::rmsnorm_backward_weight(a_.data(), rkv_ + dr_, dckv_.data(), N_, rkv_, eps_, kv_a_norm_->grad.data());
  kernels::linear_backward_weight(dcq_raw_.data(), x_, N_, d_, rq_, q_a_->grad.data());
  kernels::linear_backward_weight(da_.data(), x_, N_, d_, rkv_ + dr_, kv_a_->grad.data());
}

template <class T>
void Mla<T>::release() {
  for (auto* v : {&cq_raw_, &a_, &kpe_, &cq_, &ckv_, &q_, &kv_, &p_, &o_out_, &do_, &dq_, &dkv_, &dcq_, &dcq_raw_,
                  &dckv_, &da_, &dkpe_, &dP_})
    std::vector<T>().swap(*v);
  x_ = du_ = nullptr;
}

template class Mla<float>;
template class Mla<double>;

}  // namespace switchyard::trainer
