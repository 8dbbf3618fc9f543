// ShardedAdamW (header): ZeRO-1 with reduce-scatter / all-gather over flat segments.
#include "switchyard/trainer/dist/sharded_adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/dist/grad_sync.h"

namespace switchyard::trainer::dist {

ShardedAdamW::ShardedAdamW(ParameterSet<float>& params, int64_t num_experts, const ParallelGroups& groups,
                           AdamWConfig config, const std::vector<const Parameter<float>*>& stage_params)
    : config_(config), groups_(groups) {
  SY_REQUIRE(num_experts > 0 && num_experts % groups.layout.ep == 0,
             "ShardedAdamW: " << num_experts << " routed experts do not divide over EP " << groups.layout.ep);
  const int64_t per_rank = num_experts / groups.layout.ep;
  Segment dense, experts;
  dense.group = groups.replica;
  experts.group = groups.dp;
  for (const auto& p : params.all()) {
    if (!stage_params.empty() && std::find(stage_params.begin(), stage_params.end(), p.get()) == stage_params.end())
      continue;
    const int64_t e = routed_expert_of(p->name);
    if (e < 0)
      dense.params.push_back(p.get());
    else if (e / per_rank == groups.ep_index)
      experts.params.push_back(p.get());
  }
  for (Segment* s : {&dense, &experts}) {
    const int64_t G = s->group->size();
    for (auto* p : s->params) s->size += p->numel();
    s->shard = (s->size + G - 1) / G;
    s->begin = s->shard * s->group->rank();
    s->flat.assign(s->shard * G, 0.0f);
    s->mine.assign(s->shard, 0.0f);
    s->m.assign(s->shard, 0);
    s->v.assign(s->shard, 0);
    s->decay.assign(s->shard, 0);
    int64_t at = 0;
    for (auto* p : s->params) {
      const bool matrix = p->shape.size() == 2;
      for (int64_t j = 0; j < p->numel(); ++j, ++at)
        if (at >= s->begin && at < s->begin + s->shard) s->decay[at - s->begin] = matrix;
    }
    segments_.push_back(std::move(*s));
  }
}

int64_t ShardedAdamW::state_elements() const {
  int64_t n = 0;
  for (const auto& s : segments_) n += s.shard;
  return n;
}

TensorMap ShardedAdamW::state_shards() const {
  TensorMap out;
  for (const Segment& s : segments_) {
    int64_t at = 0;  // first element of p in the segment
    for (const auto* p : s.params) {
      const int64_t lo = std::max(at, s.begin), hi = std::min({at + p->numel(), s.begin + s.shard, s.size});
      if (lo < hi) {
        const std::string tail = p->name + "@" + std::to_string(lo - at);
        for (const auto& [key, bits] : {std::pair{"exp_avg.", &s.m}, std::pair{"exp_avg_sq.", &s.v}}) {
          HostTensor t;
          t.dtype = DType::kBF16;
          t.shape = {hi - lo};
          t.bytes.resize((hi - lo) * sizeof(uint16_t));
          std::memcpy(t.bytes.data(), bits->data() + (lo - s.begin), t.bytes.size());
          out[key + tail] = std::move(t);
        }
      }
      at += p->numel();
    }
  }
  return out;
}

void ShardedAdamW::load_state(const TensorMap& moments, int64_t steps) {
  SY_REQUIRE(steps >= 0, "ShardedAdamW: step count " << steps << " must be >= 0");
  for (Segment& s : segments_) {
    int64_t at = 0;
    for (const auto* p : s.params) {
      const int64_t lo = std::max(at, s.begin), hi = std::min({at + p->numel(), s.begin + s.shard, s.size});
      if (lo < hi)
        for (const auto& [key, bits] : {std::pair{"exp_avg.", &s.m}, std::pair{"exp_avg_sq.", &s.v}}) {
          const std::string name = key + p->name;
          const HostTensor& t = tensor_at(moments, name);
          SY_REQUIRE(t.dtype == DType::kBF16 && t.numel() == p->numel(),
                     "ShardedAdamW: optimizer state \"" << name << "\" is " << dtype_name(t.dtype) << " with "
                                                        << t.numel() << " elements, expected BF16 with "
                                                        << p->numel());
          std::memcpy(bits->data() + (lo - s.begin), t.bytes.data() + (lo - at) * sizeof(uint16_t),
                      (hi - lo) * sizeof(uint16_t));
        }
      at += p->numel();
    }
  }
  step_ = steps;
}

void ShardedAdamW::pack_grads(Segment& s) {
  int64_t at = 0;
  for (auto* p : s.params) {
    std::memcpy(s.flat.data() + at, p->grad.data(), p->numel() * sizeof(float));
    at += p->numel();
  }
  std::fill(s.flat.begin() + at, s.flat.end(), 0.0f);
}

double ShardedAdamW::step(double lr, double max_norm) {
  const float scale = 1.0f / float(groups_.data_ranks());
  double ss = 0;
  for (Segment& s : segments_) {
    pack_grads(s);
    if (s.group->size() > 1)
      s.group->reduce_scatter(s.flat.data(), s.mine.data(), s.shard, comm::DataType::kFloat32, comm::ReduceOp::kSum);
    else
      std::memcpy(s.mine.data(), s.flat.data(), s.shard * sizeof(float));
    for (float& g : s.mine) {
      g *= scale;
      ss += double(g) * double(g);
    }
  }
  if (groups_.replica->size() > 1) {
    double out = 0;
    groups_.replica->all_reduce(&ss, &out, 1, comm::DataType::kFloat64, comm::ReduceOp::kSum);
    ss = out;
  }
  if (groups_.pp->size() > 1) {
    double out = 0;
    if (!counts_in_norm_) ss = 0;
    groups_.pp->all_reduce(&ss, &out, 1, comm::DataType::kFloat64, comm::ReduceOp::kSum);
    ss = out;
  }
  const double norm = std::sqrt(ss);
  const float clip = max_norm > 0 && norm > max_norm ? static_cast<float>(max_norm / (norm + 1e-6)) : 1.0f;

  ++step_;
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(config_.beta1, double(step_))));
  const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(config_.beta2, double(step_))));
  const float eps = static_cast<float>(config_.eps), flr = static_cast<float>(lr);
  const float decay = flr * static_cast<float>(config_.weight_decay);
  for (Segment& s : segments_) {
    // Current values of this rank's shard.
    std::vector<float> values(s.shard, 0.0f);
    int64_t at = 0;
    for (auto* p : s.params) {
      for (int64_t j = 0; j < p->numel(); ++j, ++at)
        if (at >= s.begin && at < s.begin + s.shard) values[at - s.begin] = p->value[j];
    }
    for (int64_t j = 0; j < s.shard && s.begin + j < s.size; ++j) {
      float g = s.mine[j];
      if (clip != 1.0f) g *= clip;
      float mj = dispatch::bf16_to_float(dispatch::bf16_from_float(b1 * dispatch::bf16_to_float(s.m[j]) + (1 - b1) * g));
      float vj =
          dispatch::bf16_to_float(dispatch::bf16_from_float(b2 * dispatch::bf16_to_float(s.v[j]) + (1 - b2) * g * g));
      s.m[j] = dispatch::bf16_from_float(mj);
      s.v[j] = dispatch::bf16_from_float(vj);
      const float w = values[j];
      values[j] = w - flr * (mj * c1) / (std::sqrt(vj * c2) + eps) - (s.decay[j] ? decay : 0.0f) * w;
    }
    if (s.group->size() > 1)
      s.group->all_gather(values.data(), s.flat.data(), s.shard, comm::DataType::kFloat32);
    else
      std::memcpy(s.flat.data(), values.data(), s.shard * sizeof(float));
    at = 0;
    for (auto* p : s.params) {
      std::memcpy(p->value.data(), s.flat.data() + at, p->numel() * sizeof(float));
      at += p->numel();
    }
  }
  return norm;
}

}  // namespace switchyard::trainer::dist
