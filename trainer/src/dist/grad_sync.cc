// GradientSync (header): flat all-reduces over the replica and DP groups, global norm.
#include "switchyard/trainer/dist/grad_sync.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "switchyard/common/error.h"

namespace switchyard::trainer::dist {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Sums the gradients of `params` over `group` (sum, then * scale), through one flat buffer.
void all_reduce_grads(comm::Communicator& group, const std::vector<Parameter<float>*>& params, float scale,
                      std::vector<float>& send, std::vector<float>& recv) {
  size_t n = 0;
  for (auto* p : params) n += p->grad.size();
  if (n == 0) return;
  send.resize(n);
  recv.resize(n);
  size_t at = 0;
  for (auto* p : params) {
    std::memcpy(send.data() + at, p->grad.data(), p->grad.size() * sizeof(float));
    at += p->grad.size();
  }
  if (group.size() > 1)
    group.all_reduce(send.data(), recv.data(), n, comm::DataType::kFloat32, comm::ReduceOp::kSum);
  else
    recv.swap(send);
  at = 0;
  for (auto* p : params) {
    for (size_t i = 0; i < p->grad.size(); ++i) p->grad[i] = recv[at + i] * scale;
    at += p->grad.size();
  }
}

double sum_squares(const std::vector<Parameter<float>*>& params) {
  double ss = 0;
  for (auto* p : params)
    for (float g : p->grad) ss += double(g) * double(g);
  return ss;
}

double all_reduce_sum(comm::Communicator& group, double x) {
  if (group.size() == 1) return x;
  double out = 0;
  group.all_reduce(&x, &out, 1, comm::DataType::kFloat64, comm::ReduceOp::kSum);
  return out;
}

}  // namespace

int64_t routed_expert_of(const std::string& name) {
  static const std::string kKey = ".mlp.experts.";
  size_t at = name.find(kKey);
  if (at == std::string::npos) return -1;
  at += kKey.size();
  size_t end = name.find('.', at);
  if (end == std::string::npos || end == at) return -1;
  return std::stoll(name.substr(at, end - at));
}

GradientSync::GradientSync(ParameterSet<float>& params, int64_t num_experts, const ParallelGroups& groups,
                           std::vector<const Parameter<float>*> stage_params)
    : params_(params), groups_(groups) {
  const int ep = groups.layout.ep;
  SY_REQUIRE(num_experts > 0 && num_experts % ep == 0,
             "GradientSync: " << num_experts << " routed experts do not divide over EP " << ep);
  experts_per_rank_ = num_experts / ep;
  auto in_stage = [&](const Parameter<float>* p) {
    if (stage_params.empty()) return true;
    for (auto* q : stage_params)
      if (q == p) return true;
    return false;
  };
  for (const auto& p : params.all()) {
    if (!in_stage(p.get())) continue;
    const int64_t e = routed_expert_of(p->name);
    if (e < 0)
      dense_.push_back(p.get());
    else if (e / experts_per_rank_ == groups.ep_index)
      owned_experts_.push_back(p.get());
    else
      foreign_experts_.push_back(p.get());
  }
}

bool GradientSync::owns(const Parameter<float>& p) const {
  for (auto* q : dense_)
    if (q == &p) return true;
  for (auto* q : owned_experts_)
    if (q == &p) return true;
  return false;
}

void GradientSync::reduce() {
  const auto t0 = Clock::now();
  const float scale = 1.0f / float(groups_.data_ranks());
  all_reduce_grads(*groups_.replica, dense_, scale, send_, recv_);
  all_reduce_grads(*groups_.dp, owned_experts_, scale, send_, recv_);
  for (auto* p : foreign_experts_) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
  comm_seconds_ += since(t0);
}

double GradientSync::clip(double max_norm) {
  const auto t0 = Clock::now();
  // Dense gradients are identical over the replica group: count them once per stage.
  double ss = sum_squares(dense_) + all_reduce_sum(*groups_.ep, sum_squares(owned_experts_));
  ss = all_reduce_sum(*groups_.pp, counts_in_norm_ ? ss : 0.0);
  comm_seconds_ += since(t0);
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (auto* p : dense_)
      for (float& g : p->grad) g *= scale;
    for (auto* p : owned_experts_)
      for (float& g : p->grad) g *= scale;
  }
  return norm;
}

void GradientSync::sum_over_replica(std::vector<double>& v) {
  if (groups_.replica->size() == 1 || v.empty()) return;
  std::vector<double> out(v.size());
  groups_.replica->all_reduce(v.data(), out.data(), v.size(), comm::DataType::kFloat64, comm::ReduceOp::kSum);
  v.swap(out);
}

void GradientSync::mean_over_replica(std::vector<double>& v) {
  sum_over_replica(v);
  for (double& x : v) x /= double(groups_.replica->size());
}

}  // namespace switchyard::trainer::dist
