// DeepSeekMoE block: sigmoid router with an FP32 selection bias, group-limited top-k,
// routed experts behind an ExpertProvider, the shared expert, and the sequence-wise
// balance loss of trainer/configs/README.md.
//
// y = shared(x) + sum_k w_k expert_{idx_k}(x); w from the unbiased sigmoid scores
// (normalised, times routed_scaling_factor). The bias and the top-k choices get no gradient.
// The router runs in T (FP32 in the float model). Buffers passed in must live until
// backward_weight returns. Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/experts.h"
#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/router.h"

namespace switchyard::trainer {

template <class T>
class MoeBlock {
 public:
  // prefix: "model.layers.N.mlp."
  MoeBlock(const ModelConfig& config, ParameterSet<T>& params, const std::string& prefix);
  // x: [B*T, d]; y: [B*T, d]. Computes routing, expert counts and the balance loss.
  void forward(const T* x, int64_t batch, int64_t seq_len, T* y);
  // dy: [B*T, d]; x: the forward input; dx: [B*T, d] set. balance_coef: d total / d balance loss.
  void backward_input(const T* dy, const T* x, T* dx, double balance_coef);
  void backward_weight();
  void release();

  double balance_loss() const { return balance_loss_; }     // mean over sequences, without alpha
  const std::vector<double>& expert_counts() const { return counts_; }  // [E] from the last forward
  double min_margin() const { return min_margin_; }          // smallest routing decision margin
  std::vector<float>& bias() { return bias_; }                // [E] e_score_correction_bias (FP32)
  const std::string& bias_name() const { return bias_name_; }
  // Replaces the routed experts (e.g. with a dispatching provider); default LocalExperts.
  void set_expert_provider(std::unique_ptr<ExpertProvider<T>> provider) { experts_ = std::move(provider); }

 private:
  // backward_input pieces: the routed experts' input gradients (+= dx) and dw_ through the
  // per-assignment contract; the router's gradient from dw_ and the balance loss (+= dx).
  void backward_per_assignment(const T* dy, T* dx);
  void route_backward(T* dx, double balance_coef);

  int64_t d_, E_, K_;
  RouterConfig router_;
  Parameter<T>* gate_;
  std::vector<float> bias_;
  std::string bias_name_;
  std::unique_ptr<SwiGlu<T>> shared_;
  std::unique_ptr<ExpertProvider<T>> experts_;
  int64_t B_ = 0, T_ = 0, N_ = 0;
  const T* x_ = nullptr;
  std::vector<T> scores_;         // [N, E] sigmoid
  std::vector<T> topk_weight_;    // [N, K]
  RoutingPlan plan_;
  std::vector<T> expert_out_;     // [N*K, d] per-assignment outputs, or [N, d] combined (weighted_)
  bool weighted_ = false;         // the provider ran forward_weighted in the last forward
  std::vector<double> f_;         // [B, E] balance-loss f_i per sequence
  std::vector<double> counts_;
  double balance_loss_ = 0, min_margin_ = 0;
  std::vector<T> d_expert_out_, dlogits_, ds_, dw_;
};

}  // namespace switchyard::trainer
