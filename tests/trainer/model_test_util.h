// Shared helpers of the trainer model tests: test-scale random weights and batches.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "switchyard/trainer/model.h"

namespace switchyard::trainer::testing {

// Weights of test scale: Linear ~ N(0, (0.5/sqrt(in))^2), the router gate wider (spread
// scores, so routing margins are far from ties), embedding ~ N(0, 1), norm weights
// 1 + N(0, 0.1^2), biases ~ N(0, 0.05^2). Deterministic in seed.
template <class T>
void randomize_for_test(Model<T>& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (auto& p : model.parameters().all()) {
    const std::string& n = p->name;
    double std = 0, mean = 0;
    if (n.find("norm.weight") != std::string::npos) {
      mean = 1.0, std = 0.1;
    } else if (n == "model.embed_tokens.weight") {
      std = 1.0;
    } else if (n.find("mlp.gate.weight") != std::string::npos) {
      std = 3.0 / std::sqrt(double(p->shape[1]));
    } else {
      std = 0.5 / std::sqrt(double(p->shape[1]));
    }
    for (auto& v : p->value) v = T(mean + std * normal(rng));
  }
  for (int64_t l : model.moe_layer_indices())
    for (auto& b : model.expert_bias(l)) b = float(0.05 * normal(rng));
}

// tokens [batch, seq_len + D + 1] uniform in [0, V).
inline std::vector<int64_t> random_tokens(const ModelConfig& c, int64_t batch, int64_t seq_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> u(0, c.vocab_size - 1);
  std::vector<int64_t> t(batch * (seq_len + c.num_nextn_predict_layers + 1));
  for (auto& x : t) x = u(rng);
  return t;
}

}  // namespace switchyard::trainer::testing
