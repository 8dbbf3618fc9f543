// SwiGLU MLP, routing plans and local experts (see experts.h).
#include "switchyard/trainer/experts.h"

#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace switchyard::trainer {

RoutingPlan make_routing_plan(const int64_t* topk_idx, int64_t n, int64_t K, int64_t E) {
  RoutingPlan p;
  p.num_tokens = n;
  p.top_k = K;
  p.num_experts = E;
  p.topk_idx.assign(topk_idx, topk_idx + n * K);
  p.expert_offset.assign(E + 1, 0);
  for (int64_t a = 0; a < n * K; ++a) p.expert_offset[topk_idx[a] + 1]++;
  for (int64_t e = 0; e < E; ++e) p.expert_offset[e + 1] += p.expert_offset[e];
  std::vector<int64_t> fill(p.expert_offset.begin(), p.expert_offset.end() - 1);
  p.order.resize(n * K);
  for (int64_t a = 0; a < n * K; ++a) p.order[fill[topk_idx[a]]++] = a;  // stable: token order within an expert
  return p;
}

template <class T>
SwiGlu<T>::SwiGlu(Parameter<T>* gate, Parameter<T>* up, Parameter<T>* down, int64_t dim, int64_t inter)
    : gate_(gate), up_(up), down_(down), dim_(dim), inter_(inter) {}

template <class T>
void SwiGlu<T>::forward(const T* x, int64_t n, T* y) {
  n_ = n;
  x_ = x;
  a_.resize(n * inter_);
  b_.resize(n * inter_);
  g_.resize(n * inter_);
  sig_.resize(n * inter_);
  if (n == 0) return;
  kernels::linear_forward(x, gate_->value.data(), n, dim_, inter_, a_.data());
  kernels::linear_forward(x, up_->value.data(), n, dim_, inter_, b_.data());
  kernels::swiglu_forward(a_.data(), b_.data(), n * inter_, g_.data(), sig_.data());
  kernels::linear_forward(g_.data(), down_->value.data(), n, inter_, dim_, y);
}

template <class T>
void SwiGlu<T>::backward_input(const T* dy, const T* x, T* dx, bool accumulate) {
  dy_ = dy;
  x_ = x;
  da_.resize(n_ * inter_);
  db_.resize(n_ * inter_);
  if (n_ == 0) return;
  std::vector<T>& dg = dg_;
  dg.resize(n_ * inter_);
  kernels::linear_backward_input(dy, down_->value.data(), n_, inter_, dim_, dg.data(), false);
  kernels::swiglu_backward(a_.data(), b_.data(), sig_.data(), dg.data(), n_ * inter_, da_.data(), db_.data());
  kernels::linear_backward_input(da_.data(), gate_->value.data(), n_, dim_, inter_, dx, accumulate);
  kernels::linear_backward_input(db_.data(), up_->value.data(), n_, dim_, inter_, dx, true);
}

template <class T>
void SwiGlu<T>::backward_weight() {
  if (n_ == 0) return;
  kernels::linear_backward_weight(dy_, g_.data(), n_, inter_, dim_, down_->grad.data());
  kernels::linear_backward_weight(da_.data(), x_, n_, dim_, inter_, gate_->grad.data());
  kernels::linear_backward_weight(db_.data(), x_, n_, dim_, inter_, up_->grad.data());
}

template <class T>
void SwiGlu<T>::release() {
  for (auto* v : {&a_, &b_, &g_, &sig_, &da_, &db_, &dg_}) std::vector<T>().swap(*v);
  x_ = dy_ = nullptr;
}

template <class T>
LocalExperts<T>::LocalExperts(std::vector<SwiGlu<T>> experts, int64_t dim) : experts_(std::move(experts)), dim_(dim) {}

template <class T>
void LocalExperts<T>::forward(const RoutingPlan& plan, const T* x, T* out) {
  const int64_t rows = plan.num_tokens * plan.top_k, d = dim_;
  x_sorted_.resize(rows * d);
  y_sorted_.resize(rows * d);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(&x_sorted_[r * d], x + (plan.order[r] / plan.top_k) * d, d * sizeof(T));
  for (int64_t e = 0; e < plan.num_experts; ++e) {
    int64_t begin = plan.expert_offset[e], n = plan.expert_offset[e + 1] - begin;
    experts_[e].forward(&x_sorted_[begin * d], n, &y_sorted_[begin * d]);
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out + plan.order[r] * d, &y_sorted_[r * d], d * sizeof(T));
}

template <class T>
void LocalExperts<T>::backward_input(const RoutingPlan& plan, const T* d_out, T* dx) {
  const int64_t rows = plan.num_tokens * plan.top_k, d = dim_;
  dy_sorted_.resize(rows * d);
  dx_sorted_.resize(rows * d);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(&dy_sorted_[r * d], d_out + plan.order[r] * d, d * sizeof(T));
  for (int64_t e = 0; e < plan.num_experts; ++e) {
    int64_t begin = plan.expert_offset[e];
    experts_[e].backward_input(&dy_sorted_[begin * d], &x_sorted_[begin * d], &dx_sorted_[begin * d], false);
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* dst = dx + (plan.order[r] / plan.top_k) * d;
    const T* src = &dx_sorted_[r * d];
    for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
  }
}

template <class T>
void LocalExperts<T>::backward_weight() {
  for (auto& e : experts_) e.backward_weight();
}

template <class T>
void LocalExperts<T>::release() {
  for (auto& e : experts_) e.release();
  for (auto* v : {&x_sorted_, &y_sorted_, &dy_sorted_, &dx_sorted_}) std::vector<T>().swap(*v);
}

template class SwiGlu<float>;
template class SwiGlu<double>;
template class LocalExperts<float>;
template class LocalExperts<double>;

}  // namespace switchyard::trainer
