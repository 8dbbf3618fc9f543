// DistTrainer on several ranks (started by sy-run, 2 virtual nodes) against the one-process
// training step on the whole global batch (independent reference: Model with LocalExperts,
// clip_grad_norm, AdamW, update_expert_bias). FP32 wire: losses over 5 steps within 1e-5
// (relative) and every parameter afterwards within 1e-5 (normwise per tensor). FP8 wire:
// close but not equal (the check would fail without real dispatch arithmetic).
//
// Every rank runs every test; EXPECT (not ASSERT) keeps the collectives in step.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/dist/dist_run.h"
#include "switchyard/trainer/dist/dist_trainer.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard::trainer::dist {
namespace {

std::shared_ptr<comm::Communicator> world() {
  static std::shared_ptr<comm::Communicator> w = comm::Communicator::init();
  return w;
}

// A path under the test temp dir unique to this job (all its ranks agree on it).
std::string scratch(const std::string& name) {
  const comm::LaunchEnv env = comm::LaunchEnv::detect();
  std::string job = env.job_id.empty() ? env.rendezvous : env.job_id;
  for (char& ch : job)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return testing::TempDir() + "/sy_dist_" + job + "_" + name;
}

constexpr int64_t kSteps = 5, kSeq = 16, kGlobalBatch = 8;
// AdamW keeps BF16 moments: the rounding of m and v turns FP32 summation-order differences
// of the gradients into update differences of ~1e-3 * lr per element, so a small lr keeps the
// parameter check at 1e-5 meaningful (the loss check does not depend on it).
constexpr double kLr = 1e-4, kBiasRate = 1e-3, kClip = 1.0;

ModelConfig test_config() {
  ModelConfig c = model_config_preset("nano");
  c.max_position_embeddings = kSeq;
  return c;
}

// Global batches for all steps: [kSteps][kGlobalBatch, kSeq + D + 1], same on every rank.
std::vector<std::vector<int64_t>> make_batches(const ModelConfig& c) {
  std::mt19937_64 rng(1234);
  const int64_t window = kSeq + c.num_nextn_predict_layers + 1;
  std::vector<std::vector<int64_t>> out(kSteps, std::vector<int64_t>(kGlobalBatch * window));
  for (auto& b : out)
    for (auto& t : b) t = static_cast<int64_t>(rng() % uint64_t(c.vocab_size));
  return out;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<double> grad_norms;
  TensorMap weights;
};

// The one-process step on the whole global batch.
RunResult reference_run(const ModelConfig& c, const std::vector<std::vector<int64_t>>& batches) {
  Model<float> model(c);
  model.init_random(7, 0.02);
  AdamW opt(model.parameters(), AdamWConfig{});
  RunResult r;
  for (const auto& batch : batches) {
    model.zero_grad();
    r.losses.push_back(model.forward(batch.data(), kGlobalBatch, kSeq).total);
    model.backward();
    r.grad_norms.push_back(clip_grad_norm(model.parameters(), kClip));
    opt.step(kLr);
    for (int64_t layer : model.moe_layer_indices())
      update_expert_bias(model.expert_bias(layer).data(), model.expert_counts(layer).data(), c.n_routed_experts,
                         kBiasRate);
  }
  r.weights = model.weights();
  return r;
}

RunResult distributed_run(const ModelConfig& c, const std::vector<std::vector<int64_t>>& batches, ParallelLayout layout,
                    ExpertWire wire, bool zero1 = false) {
  DistOptions o;
  o.zero1 = zero1;
  o.layout = layout;
  o.wire = wire;
  o.clip = kClip;
  o.seed = 7;
  o.init_std = 0.02;
  DistTrainer t(world(), c, o);
  RunResult r;
  bool first = true;
  for (const auto& batch : batches) {
    if (!first && world()->rank_map().num_nodes() > 1 && layout.ep == world()->size()) {
      // EP over both virtual nodes: the node-limited two-hop path must be the one that ran.
      EXPECT_TRUE(t.buffer()->uses_two_hop());
    }
    first = false;
    DistStepMetrics m = t.step(batch.data(), kGlobalBatch, kSeq, kLr, kBiasRate);
    r.losses.push_back(m.losses.total);
    r.grad_norms.push_back(m.grad_norm);
  }
  r.weights = t.gather_weights();
  return r;
}

// max over tensors of ||a - b|| / ||b||, and the worst tensor's name.
double worst_normwise(const TensorMap& a, const TensorMap& b, std::string* worst) {
  double out = 0;
  for (const auto& [name, tb] : b) {
    auto it = a.find(name);
    EXPECT_NE(it, a.end()) << name;
    if (it == a.end()) continue;
    std::vector<double> x = it->second.to_vector<double>(), y = tb.to_vector<double>();
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

void expect_equivalent(ParallelLayout layout, bool zero1 = false) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const RunResult ref = reference_run(c, batches);
  const RunResult dist = distributed_run(c, batches, layout, ExpertWire::kFloat32, zero1);
  const int rank = world()->rank();
  for (int64_t s = 0; s < kSteps; ++s) {
    EXPECT_LE(std::abs(dist.losses[s] - ref.losses[s]), 1e-5 * std::abs(ref.losses[s]))
        << layout.to_string() << " rank " << rank << " step " << s << ": " << dist.losses[s] << " vs "
        << ref.losses[s];
    EXPECT_LE(std::abs(dist.grad_norms[s] - ref.grad_norms[s]), 1e-4 * ref.grad_norms[s])
        << "step " << s << " grad norm " << dist.grad_norms[s] << " vs " << ref.grad_norms[s];
  }
  std::string worst;
  const double rel = worst_normwise(dist.weights, ref.weights, &worst);
  EXPECT_LE(rel, 1e-5) << layout.to_string() << " rank " << rank << ": parameter " << worst << " differs by " << rel;
  // The run must have moved the parameters (otherwise equality proves nothing).
  Model<float> init(c);
  init.init_random(7, 0.02);
  std::string moved;
  EXPECT_GT(worst_normwise(init.weights(), ref.weights, &moved), 1e-3);
}

TEST(DistTrainerTest, ExpertParallelOverAllRanksMatchesOneProcess) {
  expect_equivalent(ParallelLayout{world()->size(), 1, 1});
}

TEST(DistTrainerTest, ExpertTimesDataParallelMatchesOneProcess) {
  if (world()->size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  expect_equivalent(ParallelLayout{2, 1, world()->size() / 2});
}

TEST(DistTrainerTest, ExpertFourTimesDataParallelMatchesOneProcess) {
  if (world()->size() < 8 || world()->size() % 4 != 0) GTEST_SKIP() << "needs 8, 12, ... ranks";
  expect_equivalent(ParallelLayout{4, 1, world()->size() / 4});
}

TEST(DistTrainerTest, ZeroOneShardedOptimizerMatchesOneProcess) {
  if (world()->size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  expect_equivalent(ParallelLayout{2, 1, world()->size() / 2}, /*zero1=*/true);
}

// 3 steps, sharded checkpoint, 2 more steps in a fresh trainer: bitwise equal to 5 straight
// steps on the same layout, within 1e-5 when resumed on another layout.
TEST(DistTrainerTest, ShardedCheckpointResumesOnSameAndOtherLayout) {
  if (world()->size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  DistOptions o;
  o.layout = ParallelLayout{world()->size(), 1, 1};
  o.wire = ExpertWire::kFloat32;
  o.seed = 7;
  const std::string dir = scratch("ckpt");
  TensorMap straight;
  {
    DistTrainer t(world(), c, o);
    for (int64_t s = 0; s < kSteps; ++s) {
      t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate);
      if (s == 2) t.save_sharded(dir, "{\"data\": 3}");
    }
    straight = t.gather_weights();
  }
  for (ParallelLayout layout : {o.layout, ParallelLayout{2, 1, world()->size() / 2}}) {
    DistOptions o2 = o;
    o2.layout = layout;
    o2.seed = 99;  // the checkpoint must overwrite everything
    DistTrainer t(world(), c, o2);
    EXPECT_EQ(t.load_sharded(dir), "{\"data\": 3}");
    for (int64_t s = 3; s < kSteps; ++s) t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate);
    const TensorMap resumed = t.gather_weights();
    std::string worst;
    const double rel = worst_normwise(resumed, straight, &worst);
    if (layout.ep == o.layout.ep) {
      EXPECT_EQ(rel, 0.0) << "same layout: " << worst << " differs by " << rel;
    } else {
      EXPECT_LE(rel, 1e-5) << layout.to_string() << ": " << worst << " differs by " << rel;
    }
  }
  world()->barrier();
  if (world()->rank() == 0) std::filesystem::remove_all(dir);
}

TEST(DistTrainerTest, Fp8DispatchIsCloseButNotExact) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const RunResult ref = reference_run(c, batches);
  const RunResult fp8 = distributed_run(c, batches, ParallelLayout{world()->size(), 1, 1}, ExpertWire::kFp8Bf16);
  double max_rel = 0;
  for (int64_t s = 0; s < kSteps; ++s) {
    const double rel = std::abs(fp8.losses[s] - ref.losses[s]) / std::abs(ref.losses[s]);
    EXPECT_LE(rel, 1e-2) << "step " << s << ": FP8 dispatch loss " << fp8.losses[s] << " vs " << ref.losses[s];
    max_rel = std::max(max_rel, rel);
  }
  EXPECT_GT(max_rel, 1e-7) << "FP8/BF16 payloads should not reproduce FP32 losses exactly";
}

TEST(DistTrainerTest, RejectsLayoutsThatDoNotFit) {
  const ModelConfig c = test_config();
  DistOptions o;
  o.layout = ParallelLayout{world()->size() + 1, 1, 1};
  EXPECT_THROW(DistTrainer(world(), c, o), InvalidArgument);
  o.layout = ParallelLayout{0, 1, world()->size()};
  EXPECT_THROW(DistTrainer(world(), c, o), InvalidArgument);
}

// The sy-train path: a few steps on a text file lower the loss on every layout, and the trace
// has every rank's compute and the EP dispatch/combine events.
TEST(DistTrainerTest, RunDistributedTrainingLearnsAndWritesTrace) {
  TrainOptions t;
  t.preset = "nano";
  t.data = SY_SOURCE_DIR "/trainer/configs/README.md";
  t.steps = 24;
  t.batch = 8;
  t.seq = 32;
  t.lr = 3e-3;
  t.warmup = 0;
  DistRunOptions r;
  r.layout = ParallelLayout{2, 1, world()->size() / 2};
  r.log_every = 0;
  r.trace_path = scratch("trace.json");
  r.timeline_path = scratch("timeline.svg");
  r.trace_steps = 2;
  r.sample_prompt = "The ";
  r.sample_tokens = 8;
  std::ostringstream out;
  DistRunResult res = run_distributed_training(world(), t, r, out);
  EXPECT_EQ(res.steps, 24);
  EXPECT_LT(res.last_mean, res.first_mean - 0.3) << out.str();
  EXPECT_GT(res.breakdown.compute, 0);
  EXPECT_GT(res.breakdown.exposed_comm, 0);
  if (world()->rank() == 0) {
    EXPECT_EQ(res.sample.size(), 4u + 8u);
    std::ifstream f(r.trace_path);
    ASSERT_TRUE(f.good());
    nlohmann::json trace = nlohmann::json::parse(f);
    std::set<int> pids;
    int dispatches = 0;
    for (const auto& e : trace["traceEvents"]) {
      if (e.value("ph", "") != "X") continue;
      pids.insert(e["pid"].get<int>());
      if (e.value("name", "").find("DISPATCH") != std::string::npos) ++dispatches;
    }
    EXPECT_EQ(pids.size(), size_t(world()->size()));
    EXPECT_GT(dispatches, 0);
    std::ifstream svg(r.timeline_path);
    EXPECT_TRUE(svg.good());
  }
}

TEST(DistTrainerTest, RoutedExpertOfParsesNames) {
  EXPECT_EQ(routed_expert_of("model.layers.2.mlp.experts.13.up_proj.weight"), 13);
  EXPECT_EQ(routed_expert_of("model.layers.2.mlp.shared_experts.up_proj.weight"), -1);
  EXPECT_EQ(routed_expert_of("model.layers.2.mlp.gate.weight"), -1);
}

}  // namespace
}  // namespace switchyard::trainer::dist
