// The training loop: resume equivalence, checkpoint mismatch, non-finite losses, learning,
// option errors, and speculative decoding == plain greedy decoding.
#include "switchyard/trainer/train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "switchyard/trainer/train/generate.h"
#include "switchyard/testing/temp_dir.h"

namespace switchyard::trainer {
namespace {

namespace fs = std::filesystem;

struct TempDir : ::switchyard::testing::TempDir {
  TempDir() : ::switchyard::testing::TempDir("sy_trainer_test") {}
  fs::path path = ::switchyard::testing::TempDir::path();
};

// A small corpus with structure to learn: short sentences from a few words.
std::string write_corpus(const fs::path& dir) {
  static const char* words[] = {"the", "lord", "said", "unto", "moses", "and", "light", "was", "good", "day"};
  std::mt19937_64 rng(42);
  std::ostringstream text;
  for (int p = 0; p < 60; ++p) {
    for (int s = 0; s < 4; ++s) {
      int n = 3 + int(rng() % 5);
      for (int w = 0; w < n; ++w) text << (w ? " " : "") << words[rng() % 10];
      text << ".\n";
    }
    text << "\n";
  }
  fs::path p = dir / "corpus.txt";
  std::ofstream(p) << text.str();
  return p.string();
}

TrainOptions small_options(const std::string& data, const std::string& ckpt_dir) {
  TrainOptions o;
  o.preset = "nano";
  o.data = data;
  o.steps = 6;
  o.batch = 2;
  o.seq = 16;
  o.grad_accum = 2;
  o.lr = 3e-3;
  o.warmup = 2;
  o.lr_decay = "cosine";
  o.mtp_weight = "0.3,4:0.1";
  o.bias_rate = "0.01";
  o.ckpt_dir = ckpt_dir;
  o.seed = 7;
  return o;
}

void expect_same_weights(Model<float>& a, Model<float>& b) {
  TensorMap wa = a.weights(), wb = b.weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) ASSERT_EQ(t.bytes, tensor_at(wb, name).bytes) << name;
}

TEST(TrainerTest, ResumeIsBitwiseIdenticalToAnUninterruptedRun) {
  TempDir dir;
  std::string data = write_corpus(dir.path);
  Trainer straight(small_options(data, (dir.path / "a").string()));
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) losses.push_back(straight.train_step().loss);

  {
    Trainer first(small_options(data, (dir.path / "b").string()));
    for (int i = 0; i < 3; ++i) EXPECT_EQ(first.train_step().loss, losses[i]);
    first.save_checkpoint();
  }
  Trainer resumed(small_options(data, (dir.path / "b").string()));
  resumed.restore(CheckpointManager((dir.path / "b").string(), 3).latest());
  EXPECT_EQ(resumed.step(), 3);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(resumed.train_step().loss, losses[i]) << "step " << i + 1;
  expect_same_weights(straight.model(), resumed.model());
  for (int64_t layer : straight.model().moe_layer_indices())
    EXPECT_EQ(straight.model().expert_bias(layer), resumed.model().expert_bias(layer));
  EXPECT_EQ(straight.data().position().index, resumed.data().position().index);
  EXPECT_EQ(straight.rng()(), resumed.rng()());
}

TEST(TrainerTest, MismatchedCheckpointIsAClearError) {
  TempDir dir;
  std::string data = write_corpus(dir.path);
  std::string ckpt = (dir.path / "c").string();
  {
    Trainer t(small_options(data, ckpt));
    t.train_step();
    t.save_checkpoint();
  }
  std::string latest = CheckpointManager(ckpt, 3).latest();
  TrainOptions other = small_options(data, ckpt);
  other.mtp_depth = 2;
  Trainer deeper(other);
  try {
    deeper.restore(latest);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("num_nextn_predict_layers"), std::string::npos) << e.what();
  }
  other = small_options(data, ckpt);
  other.seq = 12;
  Trainer shorter(other);
  try {
    shorter.restore(latest);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("windows of"), std::string::npos) << e.what();
  }
}

TEST(TrainerTest, NonFiniteLossStopsOrSkipsTheStep) {
  TempDir dir;
  std::string data = write_corpus(dir.path);
  TrainOptions o = small_options(data, "");
  Trainer t(o);
  t.model().parameters().at("model.norm.weight").value[0] = NAN;
  try {
    t.train_step();
    FAIL() << "no error";
  } catch (const NonFiniteLoss& e) {
    EXPECT_NE(std::string(e.what()).find("step 1: the loss is nan"), std::string::npos) << e.what();
  }
  o.skip_nonfinite = true;
  Trainer s(o);
  Parameter<float>& norm = s.model().parameters().at("model.norm.weight");
  norm.value[0] = NAN;
  std::vector<float> before = s.model().parameters().at("lm_head.weight").value;
  StepMetrics m = s.train_step();
  EXPECT_TRUE(m.skipped);
  EXPECT_EQ(s.step(), 1);
  EXPECT_EQ(s.model().parameters().at("lm_head.weight").value, before);
}

TEST(TrainerTest, LossDropsOnAStructuredCorpus) {
  TempDir dir;
  TrainOptions o = small_options(write_corpus(dir.path), "");
  o.steps = 40;
  o.batch = 4;
  o.grad_accum = 1;
  o.lr = 1e-2;
  o.lr_decay = "constant";
  Trainer t(o);
  double first = t.train_step().main_loss, last = 0;
  for (int i = 1; i < 40; ++i) last = t.train_step().main_loss;
  EXPECT_NEAR(first, std::log(256.0), 0.2);  // uniform over bytes at init
  EXPECT_LT(last, first - 1.5);
}

TEST(TrainerTest, BadOptionsAndMissingFilesAreNamed) {
  TempDir dir;
  TrainOptions o = small_options(write_corpus(dir.path), "");
  o.batch = 0;
  EXPECT_THROW(Trainer{o}, InvalidArgument);
  o = small_options((dir.path / "nope.txt").string(), "");
  try {
    Trainer t(o);
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.txt"), std::string::npos);
  }
  o = small_options(write_corpus(dir.path), "");
  o.preset = "giant";
  EXPECT_THROW(Trainer{o}, InvalidArgument);
  o = small_options(write_corpus(dir.path), "");
  o.config_path = (dir.path / "config.json").string();
  EXPECT_THROW(Trainer{o}, Error);
}

TEST(GenerateTest, SpeculativeGreedyEqualsPlainGreedy) {
  TempDir dir;
  TrainOptions o = small_options(write_corpus(dir.path), "");
  o.batch = 4;
  o.grad_accum = 1;
  o.lr = 1e-2;
  o.max_position = 96;
  Trainer t(o);
  for (int i = 0; i < 30; ++i) t.train_step();
  std::vector<int64_t> prompt = t.tokenizer().encode("the lord");
  GenerateOptions g;
  g.max_new_tokens = 60;
  std::mt19937_64 rng(1);
  GenerateResult plain = generate(t.model(), prompt, g, rng);
  g.speculative = true;
  GenerateResult spec = generate(t.model(), prompt, g, rng);
  ASSERT_EQ(plain.tokens.size(), 60u);
  EXPECT_EQ(spec.tokens, plain.tokens) << t.tokenizer().decode(plain.tokens) << "\nvs\n"
                                       << t.tokenizer().decode(spec.tokens);
  EXPECT_EQ(plain.main_passes, 60);
  EXPECT_GT(spec.drafted, 0);
  EXPECT_EQ(spec.main_passes + spec.accepted, 60);  // each accepted draft saves one pass
  g.max_new_tokens = 200;
  EXPECT_THROW(generate(t.model(), prompt, g, rng), InvalidArgument);  // past max_position
}

}  // namespace
}  // namespace switchyard::trainer

namespace switchyard::trainer {
namespace {

TEST(Fp8TrainingTest, LinearGemmsRunInFp8AndTrackFp32) {
  TempDir dir;
  TrainOptions o = small_options(write_corpus(dir.path), "");
  o.grad_accum = 1;
  Trainer fp32(o);
  o.fp8 = true;
  Trainer fp8(o);
  int64_t covered = 0;
  for (const auto& p : fp8.model().parameters().all())
    if (fp8_recipe_covers(p->name, static_cast<int64_t>(p->shape.size())) &&
        p->name.find(".experts.") == std::string::npos)
      ++covered;  // used on every step (routed experts may get no tokens)
  ASSERT_NE(linear_backend(), nullptr);
  double a = 0, b = 0;
  for (int i = 0; i < 3; ++i) {
    a = fp32.train_step().main_loss;
    b = fp8.train_step().main_loss;
  }
  auto* backend = dynamic_cast<Fp8Linear*>(linear_backend());
  ASSERT_NE(backend, nullptr);
  // forward + dgrad + wgrad of every covered Linear, 3 steps.
  EXPECT_GE(backend->fp8_gemms(), 3 * 3 * covered);
  EXPECT_NE(a, b) << "FP8 changed nothing";
  EXPECT_NEAR(b, a, 0.02 * a);
}

}  // namespace
}  // namespace switchyard::trainer
