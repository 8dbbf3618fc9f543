// AdamW (BF16 moments), clipping and schedules against reference computations written here.
#include "switchyard/trainer/train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "switchyard/common/error.h"
#include "switchyard/trainer/train/schedule.h"

namespace switchyard::trainer {
namespace {

// Round a double to the nearest BF16 value (8 significant bits), ties to even.
double round_bf16(double x) {
  if (x == 0) return 0;
  int e;
  double m = std::frexp(x, &e);      // x = m 2^e, 0.5 <= |m| < 1
  double scaled = std::ldexp(m, 8);  // 8 significant bits
  double r = std::nearbyint(scaled);  // default rounding mode: ties to even
  return std::ldexp(r, e - 8);
}

struct RefAdam {
  std::vector<double> w, m, v;
  bool decay;
};

void fill_params(ParameterSet<float>& set, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  set.add("model.layers.0.mlp.up_proj.weight", {6, 5});
  set.add("model.layers.0.input_layernorm.weight", {7});
  for (const auto& p : set.all())
    for (float& x : p->value) x = normal(rng);
}

void random_grads(ParameterSet<float>& set, std::mt19937_64& rng, double scale) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& p : set.all())
    for (float& g : p->grad) g = float(scale) * normal(rng);
}

TEST(AdamWTest, StepsMatchReferenceWithBf16Moments) {
  ParameterSet<float> set;
  fill_params(set, 1);
  AdamWConfig cfg;
  cfg.weight_decay = 0.5;
  AdamW opt(set, cfg);
  std::vector<RefAdam> ref;
  for (const auto& p : set.all())
    ref.push_back({std::vector<double>(p->value.begin(), p->value.end()), std::vector<double>(p->numel(), 0),
                   std::vector<double>(p->numel(), 0), p->shape.size() == 2});
  std::mt19937_64 rng(2);
  const double lrs[] = {1e-2, 2e-2, 5e-3, 1e-2, 1e-2, 3e-2};
  for (int t = 1; t <= 6; ++t) {
    random_grads(set, rng, t == 3 ? 1e-3 : 1.0);
    const double lr = lrs[t - 1];
    for (size_t i = 0; i < ref.size(); ++i) {
      const auto& p = *set.all()[i];
      for (int64_t j = 0; j < p.numel(); ++j) {
        double g = p.grad[j];
        ref[i].m[j] = round_bf16(0.9 * ref[i].m[j] + 0.1 * g);
        ref[i].v[j] = round_bf16(0.95 * ref[i].v[j] + 0.05 * g * g);
        double mhat = ref[i].m[j] / (1 - std::pow(0.9, t)), vhat = ref[i].v[j] / (1 - std::pow(0.95, t));
        double w = ref[i].w[j];
        ref[i].w[j] = w - lr * mhat / (std::sqrt(vhat) + 1e-8) - (ref[i].decay ? lr * 0.5 * w : 0.0);
      }
    }
    opt.step(lr);
    for (size_t i = 0; i < ref.size(); ++i) {
      const auto& p = *set.all()[i];
      for (int64_t j = 0; j < p.numel(); ++j) {
        // One BF16 ulp of a moment changes an update by <= ~1% of lr; decay is 0.5 lr |w|.
        EXPECT_NEAR(p.value[j], ref[i].w[j], 0.02 * lr * t + 1e-6) << p.name << "[" << j << "] step " << t;
        uint16_t mb;
        float mf;
        mb = opt.exp_avg(i)[j];
        uint32_t u = uint32_t(mb) << 16;
        std::memcpy(&mf, &u, 4);
        EXPECT_NEAR(mf, ref[i].m[j], std::fabs(ref[i].m[j]) * 0.0079 + 1e-12);
      }
    }
  }
  EXPECT_EQ(opt.steps(), 6);
}

TEST(AdamWTest, StateRoundTripContinuesBitwise) {
  ParameterSet<float> a, b;
  fill_params(a, 3);
  fill_params(b, 3);
  AdamW oa(a, {}), ob(b, {});
  std::mt19937_64 ra(4), rb(4);
  for (int t = 0; t < 3; ++t) {
    random_grads(a, ra, 1.0);
    oa.step(1e-2);
  }
  // b gets a's weights and state, then both take the same step.
  for (size_t i = 0; i < a.all().size(); ++i) b.all()[i]->value = a.all()[i]->value;
  ob.load_state(oa.state());
  random_grads(a, ra, 1.0);
  for (size_t i = 0; i < a.all().size(); ++i) b.all()[i]->grad = a.all()[i]->grad;
  oa.step(1e-2);
  ob.step(1e-2);
  for (size_t i = 0; i < a.all().size(); ++i) EXPECT_EQ(a.all()[i]->value, b.all()[i]->value);
  EXPECT_EQ(ob.steps(), 4);
}

TEST(AdamWTest, LoadStateRejectsMismatchedShapes) {
  ParameterSet<float> a, b;
  fill_params(a, 5);
  b.add("model.layers.0.mlp.up_proj.weight", {5, 6});
  b.add("model.layers.0.input_layernorm.weight", {7});
  AdamW oa(a, {}), ob(b, {});
  EXPECT_THROW(ob.load_state(oa.state()), InvalidArgument);
  TensorMap partial = oa.state();
  partial.erase("step");
  EXPECT_THROW(oa.load_state(partial), InvalidArgument);
}

TEST(ClipGradNormTest, ScalesToMaxNormOnlyAboveIt) {
  ParameterSet<float> set;
  fill_params(set, 6);
  std::mt19937_64 rng(7);
  random_grads(set, rng, 3.0);
  double ss = 0;
  for (const auto& p : set.all())
    for (float g : p->grad) ss += double(g) * g;
  std::vector<float> before = set.all()[0]->grad;
  double norm = clip_grad_norm(set, 1.0);
  EXPECT_NEAR(norm, std::sqrt(ss), 1e-9 * std::sqrt(ss));
  double after = 0;
  for (const auto& p : set.all())
    for (float g : p->grad) after += double(g) * g;
  EXPECT_NEAR(std::sqrt(after), 1.0, 1e-5);
  EXPECT_NEAR(set.all()[0]->grad[0], before[0] / std::sqrt(ss), 1e-6);
  std::vector<float> small = set.all()[0]->grad;
  clip_grad_norm(set, 10.0);  // below the threshold: unchanged
  EXPECT_EQ(set.all()[0]->grad, small);
}

TEST(LrScheduleTest, WarmupThenConstantOrCosine) {
  LrSchedule s;
  s.peak = 2e-3;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr = 2e-4;
  EXPECT_DOUBLE_EQ(s.at(0), 2e-3 / 10);
  EXPECT_DOUBLE_EQ(s.at(4), 2e-3 * 5 / 10);
  EXPECT_DOUBLE_EQ(s.at(10), 2e-3);
  EXPECT_DOUBLE_EQ(s.at(100), 2e-3);  // constant
  s.decay = LrDecay::kCosine;
  EXPECT_DOUBLE_EQ(s.at(10), 2e-3);
  EXPECT_NEAR(s.at(60), 2e-4 + 0.5 * (1.8e-3) * (1 + std::cos(M_PI * 0.5)), 1e-15);
  EXPECT_NEAR(s.at(85), 2e-4 + 0.5 * (1.8e-3) * (1 + std::cos(M_PI * 0.75)), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 2e-4);
  EXPECT_DOUBLE_EQ(s.at(500), 2e-4);
  EXPECT_THROW(parse_lr_decay("linear"), InvalidArgument);
}

TEST(StepScheduleTest, PiecewiseConstantValuesAndErrors) {
  StepSchedule s = StepSchedule::parse("0.3,100:0.1,250:0");
  EXPECT_DOUBLE_EQ(s.at(0), 0.3);
  EXPECT_DOUBLE_EQ(s.at(99), 0.3);
  EXPECT_DOUBLE_EQ(s.at(100), 0.1);
  EXPECT_DOUBLE_EQ(s.at(249), 0.1);
  EXPECT_DOUBLE_EQ(s.at(250), 0.0);
  EXPECT_DOUBLE_EQ(StepSchedule::parse(s.to_string()).at(120), 0.1);
  EXPECT_DOUBLE_EQ(StepSchedule::parse("0.001").at(1000000), 0.001);
  EXPECT_THROW(StepSchedule::parse(""), InvalidArgument);
  EXPECT_THROW(StepSchedule::parse("abc"), InvalidArgument);
  EXPECT_THROW(StepSchedule::parse("0.3,100"), InvalidArgument);
  EXPECT_THROW(StepSchedule::parse("0.3,100:0.1,50:0.2"), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::trainer
