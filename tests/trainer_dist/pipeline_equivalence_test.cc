// PipelineTrainer on 8 ranks over 2 virtual nodes (sy-run) against the one-process training
// step with the same global batch and micro-batch split (independent reference: Model with
// LocalExperts running each micro-batch whole, gradients summed / M, clip_grad_norm, AdamW,
// update_expert_bias). FP32 expert payloads: losses over 5 steps within 1e-5 (relative),
// every parameter afterwards within 1e-5 (normwise per tensor), for EP 4 x PP 2 and
// EP 2 x PP 2 x DP 2 under DualPipeV, DualPipe (mirrored stage copies), 1F1B and ZBV. Sharded checkpoints: saved after
// 3 of 5 steps and loaded into a fresh trainer, the run continues bitwise on the same layout
// and within 1e-5 on another (and in the EP x DP trainer without stages).
//
// Every rank runs every test; EXPECT (not ASSERT) keeps the collectives in step.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/launch_env.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/dist/dist_trainer.h"
#include "switchyard/trainer/dist/pipeline_trainer.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/router.h"
#include "switchyard/trainer/train/linear_backend.h"
#include "switchyard/trainer/train/optimizer.h"
#include "equivalence_support.h"

namespace switchyard::trainer::dist {
namespace {

constexpr int64_t kSteps = 5, kSeq = 8, kGlobalBatch = 16, kMicro = 4;
// Small lr: AdamW's BF16 moments turn FP32 summation-order differences into update
// differences of ~1e-3 * lr (docs/distributed.md), the parameter check stays meaningful.
constexpr double kLr = 1e-4, kBiasRate = 1e-3, kClip = 1.0;
constexpr uint64_t kSeed = 7;

ModelConfig test_config() { return test::nano_config(kSeq); }
std::string scratch(const std::string& name) { return test::job_scratch_path("sy_pipe", name); }

// kSteps batches of `rows` sequences (kGlobalBatch per schedule round).
std::vector<std::vector<int64_t>> make_batches(const ModelConfig& c, int64_t rows = kGlobalBatch) {
  return test::random_batches(c, kSteps, rows, kSeq, 2468);
}

using test::RunResult;
using test::world;
using test::worst_normwise;

// One process: micro-batch m is rows [m * G/M, (m+1) * G/M) run whole (G/M = 4 rows, `micro`
// micro-batches per step); gradients summed / micro. fp8: the FP8 Linear recipe.
RunResult reference_run(const ModelConfig& c, const std::vector<std::vector<int64_t>>& batches,
                        int64_t micro = kMicro, bool fp8 = false) {
  Model<float> model(c);
  model.init_random(kSeed, 0.02);
  AdamW opt(model.parameters(), AdamWConfig{});
  std::unique_ptr<Fp8Linear> fp8_linear;
  if (fp8) fp8_linear = std::make_unique<Fp8Linear>(model.parameters(), Fp8Options{});
  const int64_t window = kSeq + c.num_nextn_predict_layers + 1, E = c.n_routed_experts, rows = kGlobalBatch / kMicro;
  const std::vector<int64_t> moe = model.moe_layer_indices();
  RunResult r;
  for (const auto& batch : batches) {
    model.zero_grad();
    double loss = 0;
    std::vector<double> counts(moe.size() * E, 0.0);
    for (int64_t m = 0; m < micro; ++m) {
      loss += model.forward(batch.data() + m * rows * window, rows, kSeq).total / double(micro);
      model.backward();
      for (size_t i = 0; i < moe.size(); ++i)
        for (int64_t e = 0; e < E; ++e) counts[i * E + e] += model.expert_counts(moe[i])[e];
    }
    for (const auto& p : model.parameters().all())
      for (float& g : p->grad) g *= 1.0f / float(micro);
    r.losses.push_back(loss);
    r.grad_norms.push_back(clip_grad_norm(model.parameters(), kClip));
    opt.step(kLr);
    for (size_t i = 0; i < moe.size(); ++i)
      update_expert_bias(model.expert_bias(moe[i]).data(), counts.data() + i * E, E, kBiasRate);
  }
  r.weights = model.weights();
  return r;
}

// What an overlapped run saw on this rank (PipelineTrainer with a StepTrace enabled).
struct OverlapSeen {
  int64_t pairs = 0, collectives = 0;
  int64_t async_comm = 0;  // asynchronous dispatch/combine events
  // Pairs (async collective of micro-batch a, compute stretch of micro-batch b != a) whose
  // intervals intersect, and the longest such intersection in seconds.
  int64_t overlapping = 0;
  double longest = 0;
  StepBreakdown breakdown;
};

// accum rounds of the schedule per step (batches of accum * kGlobalBatch rows); fp8_gemms:
// set to the GEMMs run in FP8 (the recipe is on when non-null).
RunResult pipeline_run(const ModelConfig& c, const std::vector<std::vector<int64_t>>& batches, ParallelLayout layout,
                       pipeline::ScheduleKind schedule, bool fb_overlap = true, OverlapSeen* seen = nullptr,
                       int64_t accum = 1, int64_t* fp8_gemms = nullptr, bool zero1 = false) {
  PipelineOptions o;
  o.fb_overlap = fb_overlap;
  o.dist.zero1 = zero1;
  o.dist.fp8 = fp8_gemms != nullptr;
  o.dist.layout = layout;
  o.dist.wire = ExpertWire::kFloat32;
  o.dist.clip = kClip;
  o.dist.seed = kSeed;
  o.dist.init_std = 0.02;
  o.schedule = schedule;
  o.microbatches = kMicro;
  PipelineTrainer t(world(), c, o);
  t.trace().set_enabled(seen != nullptr);
  RunResult r;
  for (const auto& batch : batches) {
    DistStepMetrics m = t.step_accumulated(batch.data(), accum, kGlobalBatch, kSeq, kLr, kBiasRate);
    r.losses.push_back(m.losses.total);
    r.grad_norms.push_back(m.grad_norm);
  }
  r.weights = t.gather_weights();
  if (fp8_gemms) *fp8_gemms = t.fp8_gemms();
  if (seen) {
    if (t.overlap()) {
      seen->pairs = t.overlap()->pairs_run();
      seen->collectives = t.overlap()->collectives_run();
    }
    const auto& ev = t.trace().events();
    const auto& async = t.trace().async_flags();
    for (size_t i = 0; i < ev.size(); ++i) {
      if (!ev[i].comm || !async[i]) continue;
      ++seen->async_comm;
      const int a = ev[i].action.sub_steps.at(0).microbatch;
      for (const auto& e : ev) {
        if (e.comm || e.action.sub_steps.empty() || e.action.sub_steps[0].microbatch == a) continue;
        const double both = std::min(ev[i].end, e.end) - std::max(ev[i].start, e.start);
        if (both > 0) ++seen->overlapping, seen->longest = std::max(seen->longest, both);
      }
    }
    seen->breakdown = t.trace().breakdown();  // collective
  }
  return r;
}

void expect_equivalent(ParallelLayout layout, pipeline::ScheduleKind schedule) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const RunResult ref = reference_run(c, batches);
  const RunResult got = pipeline_run(c, batches, layout, schedule);
  const std::string what = layout.to_string() + " " + pipeline::schedule_kind_name(schedule) + " rank " +
                           std::to_string(world()->rank());
  ASSERT_EQ(got.losses.size(), ref.losses.size());
  for (int64_t s = 0; s < kSteps; ++s) {
    EXPECT_LE(std::abs(got.losses[s] - ref.losses[s]), 1e-5 * std::abs(ref.losses[s]))
        << what << " step " << s << ": loss " << got.losses[s] << " vs " << ref.losses[s];
    EXPECT_LE(std::abs(got.grad_norms[s] - ref.grad_norms[s]), 1e-4 * ref.grad_norms[s])
        << what << " step " << s << ": grad norm " << got.grad_norms[s] << " vs " << ref.grad_norms[s];
  }
  std::string worst;
  const double rel = worst_normwise(got.weights, ref.weights, &worst);
  EXPECT_LE(rel, 1e-5) << what << ": parameter " << worst << " differs by " << rel;
  // The run moved the parameters (otherwise equality would prove little).
  Model<float> init(c);
  init.init_random(kSeed, 0.02);
  const double moved = worst_normwise(ref.weights, init.weights(), &worst);
  EXPECT_GT(moved, 1e-3) << "the reference barely moved";
}

using pipeline::ScheduleKind;

TEST(PipelineTrainerTest, PlanStagesCutsLayersAndPlacesHeadLast) {
  const ModelConfig c = test_config();  // 3 main layers + 1 MTP layer
  const auto four = plan_stages(c, 4);
  ASSERT_EQ(four.size(), 4u);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(four[s].first, s);
    EXPECT_EQ(four[s].last, s + 1);
  }
  EXPECT_EQ(four[3].first, 3);
  EXPECT_EQ(four[3].last, 3);
  EXPECT_TRUE(four[0].embed && !four[0].head && four[3].head && !four[3].embed);
  const auto two = plan_stages(c, 2);
  EXPECT_EQ(two[0].last, 2);
  EXPECT_EQ(two[1].first, 2);
  EXPECT_EQ(two[1].last, 3);
}

TEST(PipelineTrainerTest, DualPipeVExpertFourTimesPipelineTwoMatchesOneProcess) {
  expect_equivalent({4, 2, 1}, ScheduleKind::kDualPipeV);
}

TEST(PipelineTrainerTest, DualPipeVExpertTwoPipelineTwoDataTwoMatchesOneProcess) {
  expect_equivalent({2, 2, 2}, ScheduleKind::kDualPipeV);
}

// DualPipe: two directions, each stage on two pipeline ranks whose gradients are summed.
TEST(PipelineTrainerTest, DualPipeExpertFourTimesPipelineTwoMatchesOneProcess) {
  expect_equivalent({4, 2, 1}, ScheduleKind::kDualPipe);
}

TEST(PipelineTrainerTest, DualPipeExpertTwoPipelineTwoDataTwoMatchesOneProcess) {
  expect_equivalent({2, 2, 2}, ScheduleKind::kDualPipe);
}

TEST(PipelineTrainerTest, OneFOneBExpertFourTimesPipelineTwoMatchesOneProcess) {
  expect_equivalent({4, 2, 1}, ScheduleKind::k1F1B);
}

TEST(PipelineTrainerTest, OneFOneBExpertTwoPipelineTwoDataTwoMatchesOneProcess) {
  expect_equivalent({2, 2, 2}, ScheduleKind::k1F1B);
}

TEST(PipelineTrainerTest, ZeroBubbleVExpertTwoPipelineTwoDataTwoMatchesOneProcess) {
  expect_equivalent({2, 2, 2}, ScheduleKind::kZBV);
}

// The FB pairs overlapped (the default) against the same run with pairs run forward then
// backward: bitwise equal losses, gradient norms and parameters; both within 1e-5 of the one
// process. The step trace shows the overlap: some dispatch/combine of one micro-batch ran
// on the communication worker while the other micro-batch of its pair computed, and the
// breakdown counts hidden communication. 4 ranks: EP 2 x PP 2 (EP spanning both nodes).
TEST(PipelineTrainerTest, FbOverlapMatchesSerialPairsBitwiseAndHidesCommunication) {
  ModelConfig c = test_config();
  c.first_k_dense_replace = 0;  // every stage has an MoE layer: both halves of a pair communicate
  const auto batches = make_batches(c);
  const ParallelLayout layout{world()->size() / 2, 2, 1};
  const std::string what = layout.to_string() + " rank " + std::to_string(world()->rank());
  OverlapSeen on, off;
  const RunResult overlapped = pipeline_run(c, batches, layout, ScheduleKind::kDualPipeV, true, &on);
  const RunResult serial = pipeline_run(c, batches, layout, ScheduleKind::kDualPipeV, false, &off);
  const RunResult ref = reference_run(c, batches);
  ASSERT_EQ(overlapped.losses.size(), serial.losses.size());
  for (int64_t s = 0; s < kSteps; ++s) {
    EXPECT_EQ(overlapped.losses[s], serial.losses[s]) << what << " step " << s;
    EXPECT_EQ(overlapped.grad_norms[s], serial.grad_norms[s]) << what << " step " << s;
    EXPECT_LE(std::abs(overlapped.losses[s] - ref.losses[s]), 1e-5 * std::abs(ref.losses[s])) << what << " step " << s;
  }
  std::string worst;
  EXPECT_EQ(worst_normwise(overlapped.weights, serial.weights, &worst), 0.0) << what << ": " << worst;
  EXPECT_LE(worst_normwise(overlapped.weights, ref.weights, &worst), 1e-5) << what << ": " << worst;
  // DualPipeV on 2 pipeline ranks with 4 micro-batches has FB pairs on both ranks, and
  // every stage has an MoE layer (the head's is the MTP layer).
  EXPECT_GT(on.pairs, 0) << what;
  EXPECT_GT(on.collectives, 0) << what;
  EXPECT_EQ(on.async_comm, on.collectives) << what << ": one asynchronous event per collective";
  EXPECT_GT(on.overlapping, 0) << what << ": no dispatch/combine of one micro-batch ran while the other computed";
  EXPECT_GT(on.longest, 0.0) << what;
  EXPECT_GT(on.breakdown.hidden_comm, 0.0) << what;
  EXPECT_EQ(off.async_comm, 0) << what;
  EXPECT_EQ(off.breakdown.hidden_comm, 0.0) << what;
  if (world()->rank() == 0)
    std::printf("FB overlap %s: %lld pairs, %lld collectives, %lld overlapping intervals (longest %.2f ms); "
                "hidden %.0f%% of communication (serial pairs: %.0f%%)\n",
                what.c_str(), static_cast<long long>(on.pairs), static_cast<long long>(on.collectives),
                static_cast<long long>(on.overlapping), on.longest * 1e3, 100 * on.breakdown.hidden_share(),
                100 * off.breakdown.hidden_share());
}

// --grad_accum with stages: 2 rounds of DualPipe (mirrored copies, whose REDUCE then runs
// twice) per step, 8 micro-batches in all, against one process with the same 8 micro-batches.
TEST(PipelineTrainerTest, GradAccumulationOverScheduleRoundsMatchesOneProcess) {
  const ModelConfig c = test_config();
  constexpr int64_t kAccum = 2;
  const auto batches = make_batches(c, kAccum * kGlobalBatch);
  const ParallelLayout layout{world()->size() / 2, 2, 1};
  const std::string what = layout.to_string() + " dualpipe, accum 2, rank " + std::to_string(world()->rank());
  const RunResult ref = reference_run(c, batches, kAccum * kMicro);
  const RunResult got = pipeline_run(c, batches, layout, ScheduleKind::kDualPipe, true, nullptr, kAccum);
  for (int64_t s = 0; s < kSteps; ++s) {
    EXPECT_LE(std::abs(got.losses[s] - ref.losses[s]), 1e-5 * std::abs(ref.losses[s])) << what << " step " << s;
    EXPECT_LE(std::abs(got.grad_norms[s] - ref.grad_norms[s]), 1e-4 * ref.grad_norms[s]) << what << " step " << s;
  }
  std::string worst;
  const double rel = worst_normwise(got.weights, ref.weights, &worst);
  EXPECT_LE(rel, 1e-5) << what << ": parameter " << worst << " differs by " << rel;
  // The second round matters: one process over the first round only differs.
  const RunResult first_only = reference_run(c, batches, kMicro);
  EXPECT_GT(std::abs(first_only.losses[1] - ref.losses[1]), 1e-5 * ref.losses[1]) << what;
}

// --zero1 with stages: the optimizer state of each stage sharded over its EP replicas, under
// DualPipe (mirrored copies) and 1F1B (the embedding's copy on the last stage), against the
// one process; a ZeRO-1 checkpoint saved after 3 steps resumes bitwise on the same layout.
TEST(PipelineTrainerTest, ZeroOneWithStagesMatchesOneProcessAndResumesBitwise) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const ParallelLayout layout{world()->size() / 2, 2, 1};
  const RunResult ref = reference_run(c, batches);
  for (ScheduleKind kind : {ScheduleKind::kDualPipe, ScheduleKind::k1F1B}) {
    const std::string what = layout.to_string() + " " + pipeline::schedule_kind_name(kind) + " zero1, rank " +
                             std::to_string(world()->rank());
    const RunResult got = pipeline_run(c, batches, layout, kind, true, nullptr, 1, nullptr, /*zero1=*/true);
    for (int64_t s = 0; s < kSteps; ++s) {
      EXPECT_LE(std::abs(got.losses[s] - ref.losses[s]), 1e-5 * std::abs(ref.losses[s])) << what << " step " << s;
      EXPECT_LE(std::abs(got.grad_norms[s] - ref.grad_norms[s]), 1e-4 * ref.grad_norms[s]) << what << " step " << s;
    }
    std::string worst;
    const double rel = worst_normwise(got.weights, ref.weights, &worst);
    EXPECT_LE(rel, 1e-5) << what << ": parameter " << worst << " differs by " << rel;
  }
  PipelineOptions o;
  o.dist.layout = layout;
  o.dist.wire = ExpertWire::kFloat32;
  o.dist.clip = kClip;
  o.dist.seed = kSeed;
  o.dist.init_std = 0.02;
  o.dist.zero1 = true;
  o.schedule = ScheduleKind::kDualPipe;
  o.microbatches = kMicro;
  const std::string dir = scratch("zero1");
  std::vector<double> straight;
  TensorMap straight_weights;
  {
    PipelineTrainer t(world(), c, o);
    for (int64_t s = 0; s < kSteps; ++s) {
      straight.push_back(t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate).losses.total);
      if (s == 2) t.save_sharded(dir, "{}");
    }
    straight_weights = t.gather_weights();
  }
  o.dist.seed = 99;
  PipelineTrainer t(world(), c, o);
  t.load_sharded(dir);
  for (int64_t s = 3; s < kSteps; ++s)
    EXPECT_EQ(t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate).losses.total, straight[s])
        << "rank " << world()->rank() << " step " << s;
  std::string worst;
  EXPECT_EQ(worst_normwise(t.gather_weights(), straight_weights, &worst), 0.0) << worst;
  world()->barrier();
  if (world()->rank() == 0) std::filesystem::remove_all(dir);
}

// --fp8 with stages: the FP8 Linear recipe on every model copy (the experts' GEMMs on the
// dispatched rows too) against one process running the recipe on the same micro-batches.
// The step-0 loss (before any update) agrees to 1e-6; afterwards FP8 rounding turns
// summation-order differences into larger ones (bounds of the EP x DP FP8 test).
TEST(PipelineTrainerTest, Fp8LinearRecipeWithStagesMatchesOneProcessFp8) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const ParallelLayout layout{world()->size() / 2, 2, 1};
  const std::string what = layout.to_string() + " dualpipev fp8, rank " + std::to_string(world()->rank());
  const RunResult one32 = reference_run(c, batches);
  const RunResult one8 = reference_run(c, batches, kMicro, /*fp8=*/true);
  int64_t gemms = 0;
  const RunResult got = pipeline_run(c, batches, layout, ScheduleKind::kDualPipeV, true, nullptr, 1, &gemms);
  const double l0 = one8.losses[0];
  EXPECT_GT(std::abs(one32.losses[0] - l0), 1e-5 * l0) << "FP8 should change the step-0 loss";
  EXPECT_GT(gemms, 0) << what;
  EXPECT_LE(std::abs(got.losses[0] - l0), 1e-6 * l0) << what << ": step-0 loss " << got.losses[0] << " vs " << l0;
  for (int64_t s = 1; s < kSteps; ++s)
    EXPECT_LE(std::abs(got.losses[s] - one8.losses[s]), 3e-4 * one8.losses[s]) << what << " step " << s;
  EXPECT_LE(std::abs(got.grad_norms[0] - one8.grad_norms[0]), 2e-3 * one8.grad_norms[0]) << what;
  std::string worst;
  const double rel = worst_normwise(test::without_router_biases(got.weights), test::without_router_biases(one8.weights), &worst);
  EXPECT_LE(rel, 1e-2) << what << ": " << worst << " differs by " << rel;
}

PipelineOptions checkpoint_options(ParallelLayout layout, pipeline::ScheduleKind schedule, uint64_t seed) {
  PipelineOptions o;
  o.dist.layout = layout;
  o.dist.wire = ExpertWire::kFloat32;
  o.dist.clip = kClip;
  o.dist.seed = seed;
  o.dist.init_std = 0.02;
  o.schedule = schedule;
  o.microbatches = kMicro;
  return o;
}

TEST(PipelineTrainerTest, ShardedCheckpointResumesBitwiseOnSameLayoutAndCloseOnOthers) {
  const ModelConfig c = test_config();
  const auto batches = make_batches(c);
  const int W = world()->size();
  const ParallelLayout layout{W / 4, 2, 2};  // 8 ranks: EP 2 x PP 2 x DP 2
  const std::string dir = scratch("ckpt");
  TensorMap straight;
  std::vector<double> straight_losses;
  {
    PipelineTrainer t(world(), c, checkpoint_options(layout, ScheduleKind::kDualPipeV, kSeed));
    for (int64_t s = 0; s < kSteps; ++s) {
      straight_losses.push_back(t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate).losses.total);
      if (s == 2) t.save_sharded(dir, "{\"data\": 3}");
    }
    straight = t.gather_weights();
  }
  // The folder is complete, renamed from its temporary name, with one file per rank.
  EXPECT_TRUE(std::filesystem::exists(dir + "/meta.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + ".tmp"));
  for (int r = 0; r < W; ++r) EXPECT_TRUE(std::filesystem::exists(dir + "/rank-" + std::to_string(r) + ".safetensors"));
  // Same layout and schedule, a trainer initialised from another seed: bitwise.
  {
    PipelineTrainer t(world(), c, checkpoint_options(layout, ScheduleKind::kDualPipeV, 99));
    EXPECT_EQ(t.load_sharded(dir), "{\"data\": 3}");
    EXPECT_EQ(t.steps_done(), 3);
    for (int64_t s = 3; s < kSteps; ++s) {
      const double loss = t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate).losses.total;
      EXPECT_EQ(loss, straight_losses[s]) << "rank " << world()->rank() << " step " << s;
    }
    std::string worst;
    const double rel = worst_normwise(t.gather_weights(), straight, &worst);
    EXPECT_EQ(rel, 0.0) << "same layout: " << worst << " differs by " << rel;
  }
  // Other layouts: EP 4 x PP 2 under 1F1B, and the EP x DP trainer without stages (same
  // global batch, each micro-batch's gradient accumulated): FP32 summation order only.
  {
    PipelineTrainer t(world(), c, checkpoint_options({W / 2, 2, 1}, ScheduleKind::k1F1B, 99));
    t.load_sharded(dir);
    for (int64_t s = 3; s < kSteps; ++s) t.step(batches[s].data(), kGlobalBatch, kSeq, kLr, kBiasRate);
    std::string worst;
    const double rel = worst_normwise(t.gather_weights(), straight, &worst);
    EXPECT_LE(rel, 1e-5) << "EP " << W / 2 << " x PP 2 1F1B: " << worst << " differs by " << rel;
  }
  {
    DistOptions o = checkpoint_options({W, 1, 1}, ScheduleKind::kDualPipeV, 99).dist;
    DistTrainer t(world(), c, o);
    t.load_sharded(dir);
    // 2 micro-batches of G / 2 rows (G / kMicro rows do not split over W data ranks): with
    // equal micro-batches the mean gradient and the summed counts are those of kMicro.
    for (int64_t s = 3; s < kSteps; ++s) t.step_micro_batches(batches[s].data(), 2, kGlobalBatch / 2, kSeq, kLr, kBiasRate);
    std::string worst;
    const double rel = worst_normwise(t.gather_weights(), straight, &worst);
    EXPECT_LE(rel, 1e-5) << "EP " << W << " without stages: " << worst << " differs by " << rel;
  }
  world()->barrier();
  if (world()->rank() == 0) std::filesystem::remove_all(dir);
}

TEST(PipelineTrainerTest, RefusesTooFewMicroBatches) {
  PipelineOptions o;
  o.dist.layout = {world()->size() / 2, 2, 1};
  o.schedule = ScheduleKind::kDualPipe;
  o.microbatches = 3;  // DualPipe splits the micro-batches over two directions
  EXPECT_THROW(PipelineTrainer(world(), test_config(), o), InvalidArgument);
  o.schedule = ScheduleKind::kDualPipeV;
  o.microbatches = 2;  // DualPipeV needs >= 2 * ranks
  try {
    PipelineTrainer t(world(), test_config(), o);
    ADD_FAILURE() << "2 micro-batches on 2 DualPipeV ranks were accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("micro-batches >= 2 * ranks"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace switchyard::trainer::dist
