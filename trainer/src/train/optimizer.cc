// AdamW with BF16 moments and gradient clipping (see optimizer.h).
#include "switchyard/trainer/train/optimizer.h"

#include <cmath>
#include <cstring>

#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"

namespace switchyard::trainer {

namespace {

HostTensor bf16_tensor(const std::vector<uint16_t>& bits, const std::vector<int64_t>& shape) {
  HostTensor t;
  t.dtype = DType::kBF16;
  t.shape = shape;
  t.bytes.resize(bits.size() * 2);
  std::memcpy(t.bytes.data(), bits.data(), t.bytes.size());
  return t;
}

std::vector<uint16_t> bf16_bits(const HostTensor& t, const std::string& name, const std::vector<int64_t>& shape) {
  SY_REQUIRE(t.dtype == DType::kBF16, "optimizer state: \"" << name << "\" has dtype " << dtype_name(t.dtype)
                                                            << ", expected BF16");
  SY_REQUIRE(t.shape == shape, "optimizer state: \"" << name << "\" has the wrong shape for its parameter");
  std::vector<uint16_t> bits(t.numel());
  std::memcpy(bits.data(), t.bytes.data(), bits.size() * 2);
  return bits;
}

}  // namespace

AdamW::AdamW(ParameterSet<float>& params, AdamWConfig config) : params_(params), config_(config) {
  for (const auto& p : params_.all()) {
    m_.emplace_back(p->numel(), uint16_t(0));
    v_.emplace_back(p->numel(), uint16_t(0));
  }
}

void AdamW::step(double lr) {
  ++step_;
  const float b1 = static_cast<float>(config_.beta1), b2 = static_cast<float>(config_.beta2);
  const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(config_.beta1, double(step_))));
  const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(config_.beta2, double(step_))));
  const float eps = static_cast<float>(config_.eps), flr = static_cast<float>(lr);
  const auto& all = params_.all();
  SY_CHECK(all.size() == m_.size());
  for (size_t i = 0; i < all.size(); ++i) {
    Parameter<float>& p = *all[i];
    const float decay = p.shape.size() == 2 ? flr * static_cast<float>(config_.weight_decay) : 0.0f;
    uint16_t* m = m_[i].data();
    uint16_t* v = v_[i].data();
    for (int64_t j = 0; j < p.numel(); ++j) {
      float g = p.grad[j];
      float mj = dispatch::bf16_to_float(dispatch::bf16_from_float(b1 * dispatch::bf16_to_float(m[j]) + (1 - b1) * g));
      float vj =
          dispatch::bf16_to_float(dispatch::bf16_from_float(b2 * dispatch::bf16_to_float(v[j]) + (1 - b2) * g * g));
      m[j] = dispatch::bf16_from_float(mj);
      v[j] = dispatch::bf16_from_float(vj);
      float w = p.value[j];
      p.value[j] = w - flr * (mj * c1) / (std::sqrt(vj * c2) + eps) - decay * w;
    }
  }
}

TensorMap AdamW::state() const {
  TensorMap out;
  const auto& all = params_.all();
  for (size_t i = 0; i < all.size(); ++i) {
    out["exp_avg." + all[i]->name] = bf16_tensor(m_[i], all[i]->shape);
    out["exp_avg_sq." + all[i]->name] = bf16_tensor(v_[i], all[i]->shape);
  }
  out["step"] = HostTensor::from_vector<int64_t>({step_}, {1});
  return out;
}

void AdamW::load_state(const TensorMap& state) {
  const auto& all = params_.all();
  std::vector<std::vector<uint16_t>> m, v;
  for (const auto& p : all) {
    std::string mn = "exp_avg." + p->name, vn = "exp_avg_sq." + p->name;
    m.push_back(bf16_bits(tensor_at(state, mn), mn, p->shape));
    v.push_back(bf16_bits(tensor_at(state, vn), vn, p->shape));
  }
  std::vector<int64_t> step = tensor_at(state, "step").to_vector<int64_t>();
  SY_REQUIRE(step.size() == 1 && step[0] >= 0, "optimizer state: \"step\" must be one non-negative integer");
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = step[0];
}

double clip_grad_norm(ParameterSet<float>& params, double max_norm) {
  double ss = 0;
  for (const auto& p : params.all())
    for (float g : p->grad) ss += double(g) * double(g);
  double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (const auto& p : params.all())
      for (float& g : p->grad) g *= scale;
  }
  return norm;
}

}  // namespace switchyard::trainer
