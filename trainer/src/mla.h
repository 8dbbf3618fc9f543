// Multi-head latent attention (MLA) of DeepSeek-V3, training path (no absorption).
//
// Per token x [d]: c_q = q_norm(W_qa x), q = W_qb c_q [H, dn + dr]; a = W_kva x [r_kv + dr],
// c_kv = kv_norm(a[0:r_kv]), [k_nope; v] = W_kvb c_kv [H, dn + dv]; k_pe = RoPE(a[r_kv:]) is
// one key shared by all heads; q_pe = RoPE(q[:, dn:]). Causal softmax attention with
// scale = config.softmax_scale(), then u = W_o o. RoPE rotates interleaved pairs.
// Scores are two GEMMs (nope part + rope part), so no per-head key copy is built.
//
// Memory: keeps c_q pre-norm, a, the probabilities P [B, H, T, T] and o. The normalised
// latents (recompute_norms) and the up-projections q, k_nope/v (recompute_up_proj) are
// freed after forward and recomputed in backward_input when the options are on.
// Buffers passed in must live until backward_weight returns. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/parameters.h"

namespace switchyard::trainer {

template <class T>
class Mla {
 public:
  // prefix: "model.layers.N.self_attn."
  Mla(const ModelConfig& config, ParameterSet<T>& params, const std::string& prefix, bool recompute_norms,
      bool recompute_up_proj);
  // x: [B*T, d] (normalised layer input); u: [B*T, d].
  void forward(const T* x, int64_t batch, int64_t seq_len, const kernels::RopeTable& rope, T* u);
  // du: [B*T, d]; x: the forward input (same values); dx: [B*T, d] set.
  void backward_input(const T* du, const T* x, T* dx);
  void backward_weight();
  void release();

 private:
  void compute_latents();     // cq_, ckv_ from cq_raw_, a_
  void compute_up_proj();     // q_, kv_ from cq_, ckv_ (q_pe roped)

  int64_t d_, H_, rq_, rkv_, dn_, dr_, dv_, dqk_;
  double eps_, scale_;
  bool recompute_norms_, recompute_up_proj_;
  Parameter<T>*q_a_, *q_a_norm_, *q_b_, *kv_a_, *kv_a_norm_, *kv_b_, *o_;
  const kernels::RopeTable* rope_ = nullptr;
  int64_t B_ = 0, T_ = 0, N_ = 0;
  const T* x_ = nullptr;
  const T* du_ = nullptr;
  // forward state
  std::vector<T> cq_raw_;  // [N, rq]
  std::vector<T> a_;       // [N, rkv + dr] (k_pe part not roped)
  std::vector<T> kpe_;     // [N, dr] roped shared key
  std::vector<T> cq_;      // [N, rq] q_norm output (recomputable)
  std::vector<T> ckv_;     // [N, rkv] kv_norm output (recomputable)
  std::vector<T> q_;       // [N, H * dqk], q_pe roped (recomputable)
  std::vector<T> kv_;      // [N, H * (dn + dv)] (recomputable)
  std::vector<T> p_;       // [B, H, T, T] softmax probabilities
  std::vector<T> o_out_;   // [N, H * dv]
  // backward state (kept for the weight gradients)
  std::vector<T> do_, dq_, dkv_, dcq_, dcq_raw_, dckv_, da_, dkpe_, dP_;
};

}  // namespace switchyard::trainer
