// Experts of a MoE layer behind an interface the dispatch library can serve later.
//
// The MoE layer routes tokens, builds a RoutingPlan and asks an ExpertProvider for the
// output of every (token, slot) assignment; it combines them with the router weights itself.
// A provider may instead take the gate weights and return the combined output (the optional
// forward_weighted/backward_weighted pair, e.g. one weighted combine over an EP group); the
// MoE block tries that first and falls back to the per-assignment contract.
// LocalExperts runs all experts in this process: it gathers each expert's rows into one
// contiguous block (grouped by expert) and runs one GEMM per expert and projection, no
// per-token loops. A distributed provider would dispatch the rows to the expert's rank,
// run the same local compute there and combine them back.
//
// Lifetimes: pointers passed to forward/backward_input must stay valid until
// backward_weight returns. Not thread-safe; one call at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/trainer/parameters.h"

namespace switchyard::trainer {

// Routing of n tokens to K experts each, and its grouping by expert.
struct RoutingPlan {
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  int64_t num_experts = 0;
  std::vector<int64_t> topk_idx;           // [num_tokens * top_k] expert of assignment a = t * K + k
  std::vector<int64_t> expert_offset;      // [E + 1] rows of expert e: order[offset[e] .. offset[e+1])
  std::vector<int64_t> order;              // [num_tokens * top_k] assignments grouped by expert
};
RoutingPlan make_routing_plan(const int64_t* topk_idx, int64_t num_tokens, int64_t top_k, int64_t num_experts);

// SwiGLU MLP y = W2 (silu(W1 x) * W3 x) on n rows (dense FFN, shared and routed experts).
// Keeps pointers to x and dy for the weight gradients.
template <class T>
class SwiGlu {
 public:
  SwiGlu() = default;
  SwiGlu(Parameter<T>* gate, Parameter<T>* up, Parameter<T>* down, int64_t dim, int64_t inter);
  // x: [n, dim]; y: [n, dim].
  void forward(const T* x, int64_t n, T* y);
  // dy: [n, dim]; x: the forward input (same values, possibly recomputed elsewhere);
  // dx: [n, dim], set or accumulated.
  void backward_input(const T* dy, const T* x, T* dx, bool accumulate);
  // Adds the gradients of gate, up and down.
  void backward_weight();
  void release();

 private:
  Parameter<T>* gate_ = nullptr;
  Parameter<T>* up_ = nullptr;
  Parameter<T>* down_ = nullptr;
  int64_t dim_ = 0, inter_ = 0, n_ = 0;
  const T* x_ = nullptr;
  const T* dy_ = nullptr;
  std::vector<T> a_, b_, g_, sig_, da_, db_, dg_;  // [n, inter] each
};

template <class T>
class ExpertProvider {
 public:
  virtual ~ExpertProvider() = default;
  // x: [N, d] token rows; out: [N * K, d] output of the expert of each assignment.
  virtual void forward(const RoutingPlan& plan, const T* x, T* out) = 0;
  // d_out: [N * K, d]; dx: [N, d] accumulated (+=).
  virtual void backward_input(const RoutingPlan& plan, const T* d_out, T* dx) = 0;
  virtual void backward_weight() = 0;
  virtual void release() = 0;

  // Optional fused form; a provider that does not implement it returns false and the MoE
  // block uses forward/backward_input. x: [N, d]; topk_weights: [N, K] gate weights of the
  // plan's slots; y: [N, d] set to sum_k topk_weights[t, k] * expert_{topk_idx[t, k]}(x_t).
  virtual bool forward_weighted(const RoutingPlan& /*plan*/, const T* /*x*/, const T* /*topk_weights*/, T* /*y*/) {
    return false;
  }
  // Only after a forward_weighted that returned true. dy: [N, d] gradient of y; dx: [N, d]
  // accumulated (+=); d_topk_weights: [N, K] set to <dy_t, expert_k(x_t)>. Then
  // backward_weight() as usual.
  virtual bool backward_weighted(const RoutingPlan& /*plan*/, const T* /*dy*/, T* /*dx*/, T* /*d_topk_weights*/) {
    return false;
  }
};

// All E experts of a layer in this process; parameters model.layers.N.mlp.experts.E.*.
template <class T>
class LocalExperts : public ExpertProvider<T> {
 public:
  // experts[e] = {gate_proj, up_proj, down_proj} of expert e.
  LocalExperts(std::vector<SwiGlu<T>> experts, int64_t dim);
  void forward(const RoutingPlan& plan, const T* x, T* out) override;
  void backward_input(const RoutingPlan& plan, const T* d_out, T* dx) override;
  void backward_weight() override;
  void release() override;

 private:
  std::vector<SwiGlu<T>> experts_;
  int64_t dim_;
  std::vector<T> x_sorted_, y_sorted_, dy_sorted_, dx_sorted_;  // [N * K, d] grouped by expert
};

}  // namespace switchyard::trainer
