// Shared by the distributed-training equivalence tests (dist_equivalence_test.cc,
// pipeline_equivalence_test.cc): the world communicator, a scratch path all ranks of a job
// agree on, the nano test model, random token batches, and the parameter comparison.
// Test-only; every function is inline and single-threaded.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/model.h"

namespace switchyard::trainer::dist::test {

inline std::shared_ptr<comm::Communicator> world() {
  static std::shared_ptr<comm::Communicator> w = comm::Communicator::init();
  return w;
}

// A path under the test temp dir unique to this job (all its ranks agree on it):
// <TempDir>/<prefix>_<job>_<name>.
inline std::string job_scratch_path(const std::string& prefix, const std::string& name) {
  const comm::LaunchEnv env = comm::LaunchEnv::detect();
  std::string job = env.job_id.empty() ? env.rendezvous : env.job_id;
  for (char& ch : job)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return testing::TempDir() + "/" + prefix + "_" + job + "_" + name;
}

// The nano preset with positions for `seq` tokens.
inline ModelConfig nano_config(int64_t seq) {
  ModelConfig c = model_config_preset("nano");
  c.max_position_embeddings = seq;
  return c;
}

// `steps` batches of `rows` token windows of seq + D + 1 tokens (D MTP depths), uniform over
// the vocabulary, the same on every rank for a given seed: [steps][rows * (seq + D + 1)].
inline std::vector<std::vector<int64_t>> random_batches(const ModelConfig& c, int64_t steps, int64_t rows, int64_t seq,
                                                        uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t window = seq + c.num_nextn_predict_layers + 1;
  std::vector<std::vector<int64_t>> out(steps, std::vector<int64_t>(rows * window));
  for (auto& b : out)
    for (auto& t : b) t = static_cast<int64_t>(rng() % uint64_t(c.vocab_size));
  return out;
}

// What a training run produced: per-step losses and gradient norms, final parameters.
struct RunResult {
  std::vector<double> losses, grad_norms;
  TensorMap weights;
};

// max over the tensors of b of ||a - b|| / ||b||, and that tensor's name in *worst; a tensor
// missing from a, or of another size, fails the test.
inline double worst_normwise(const TensorMap& a, const TensorMap& b, std::string* worst) {
  double out = 0;
  for (const auto& [name, tb] : b) {
    auto it = a.find(name);
    EXPECT_NE(it, a.end()) << name;
    if (it == a.end()) continue;
    const std::vector<double> x = it->second.to_vector<double>(), y = tb.to_vector<double>();
    EXPECT_EQ(x.size(), y.size()) << name;
    if (x.size() != y.size()) continue;
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      num += (x[i] - y[i]) * (x[i] - y[i]);
      den += y[i] * y[i];
    }
    const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    if (rel > out) {
      out = rel;
      *worst = name;
    }
  }
  return out;
}

// The parameters without the routers' e_score_correction_bias (updated from expert counts,
// not gradients; compared separately where it matters).
inline TensorMap without_router_biases(TensorMap w) {
  for (auto it = w.begin(); it != w.end();)
    it = it->first.find("e_score_correction_bias") != std::string::npos ? w.erase(it) : std::next(it);
  return w;
}

}  // namespace switchyard::trainer::dist::test
