// AdamW with FP32 master weights and gradients and BF16 moments (DeepSeek-V3 §3.3.3), and
// global-norm gradient clipping.
//
// One step, for every parameter w with gradient g (already clipped):
//   m = bf16(beta1 m + (1 - beta1) g);  v = bf16(beta2 v + (1 - beta2) g^2)   (stored BF16)
//   w -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + lr * wd * w
// where m and v in the update are the stored (rounded) values. Weight decay applies to
// matrices (2-D parameters: Linear weights and the embedding), not to norm weights.
// Arithmetic is FP32 per element, in parameter registration order.
//
// Ownership: the optimizer keeps pointers to the model's parameters (the ParameterSet must
// outlive it) and owns the moments. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/trainer/parameters.h"
#include "switchyard/trainer/safetensors.h"

namespace switchyard::trainer {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(ParameterSet<float>& params, AdamWConfig config);

  // One update with learning rate lr from the current gradients.
  void step(double lr);
  int64_t steps() const { return step_; }
  const AdamWConfig& config() const { return config_; }

  // Moments as BF16 tensors "exp_avg.<name>" / "exp_avg_sq.<name>" and the step count as
  // an I64 scalar "step".
  TensorMap state() const;
  // Throws InvalidArgument naming a missing tensor or a shape/dtype mismatch.
  void load_state(const TensorMap& state);

  // Moments of one parameter (BF16 bits), for tests.
  const std::vector<uint16_t>& exp_avg(int64_t index) const { return m_[index]; }
  const std::vector<uint16_t>& exp_avg_sq(int64_t index) const { return v_[index]; }

 private:
  ParameterSet<float>& params_;
  AdamWConfig config_;
  int64_t step_ = 0;
  std::vector<std::vector<uint16_t>> m_, v_;  // per parameter, registration order
};

// Global L2 norm of all gradients (accumulated in double). When it exceeds max_norm (> 0),
// scales every gradient by max_norm / (norm + 1e-6). Returns the norm before clipping.
double clip_grad_norm(ParameterSet<float>& params, double max_norm);

}  // namespace switchyard::trainer
