// The C++ model against the independent PyTorch reference (tests/reference/ds3_reference.py,
// written from the spec alone): same weights and batch, compare logits, MTP logits, every
// loss, every parameter gradient and the per-layer expert counts. Skipped with a message
// when /usr/bin/python3 cannot import torch or the script is absent.
//
// Tolerances (max |a - b| over a tensor, relative to max |b|):
//  - FP64 vs FP64: 1e-11. Both sides compute the same math in double; only summation
//    order differs (BLAS blocking vs torch), ~1e-16 relative per operation, measured
//    <= 3e-15 over the whole network and its backward; 1e-11 leaves 1000x margin yet
//    catches any real error (a missed or wrong term moves gradients by >= 1e-6 relative).
//  - C++ FP32 vs reference FP64 (tiny): 1e-4. FP32 rounding (2^-24 ~ 6e-8) accumulated
//    over contractions of K <= 1024 and ~10 layers; measured <= 2e-6, 50x margin.
//    Routing margins of the batch are checked above 1e-4 so FP32 rounding cannot flip it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "model_test_util.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/safetensors.h"

#ifndef SY_SOURCE_DIR
#error "SY_SOURCE_DIR must name the source tree"
#endif

namespace switchyard::trainer {
namespace {

namespace fs = std::filesystem;

const char* kPython = "/usr/bin/python3";

std::string script_path() { return std::string(SY_SOURCE_DIR) + "/tests/reference/ds3_reference.py"; }

// Empty if the reference can run, else the reason to skip.
std::string skip_reason() {
  if (!fs::exists(kPython)) return std::string(kPython) + " not found";
  if (std::system((std::string(kPython) + " -c 'import torch' > /dev/null 2>&1").c_str()) != 0)
    return std::string(kPython) + " cannot import torch";
  if (!fs::exists(script_path())) return script_path() + " is absent (the reference has not landed)";
  return "";
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / std::max(scale, 1e-300);
}

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

struct Case {
  const char* preset;
  int64_t batch, seq_len;
  uint64_t seed;
};

// Runs the reference in FP64 on the weights of `model` and compares; `tol` per the header.
template <class T>
void compare_with_reference(Model<T>& model, const std::vector<int64_t>& tokens, const Case& cs, double tol,
                            const fs::path& dir) {
  const ModelConfig& c = model.config();
  const int64_t D = c.num_nextn_predict_layers, B = cs.batch, Tn = cs.seq_len, V = c.vocab_size;
  fs::create_directories(dir);
  {
    std::ofstream config_file(dir / "config.json");
    config_file << model_config_to_json(c);
  }
  // The reference gets FP64 weights: convert whatever T the model runs in.
  TensorMap w;
  for (auto& p : model.parameters().all()) w[p->name] = HostTensor::from_vector(as_double(p->value), p->shape);
  for (int64_t l : model.moe_layer_indices()) {
    auto& b = model.expert_bias(l);
    w["model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias"] =
        HostTensor::from_vector(as_double(b), {int64_t(b.size())});
  }
  write_safetensors((dir / "w.safetensors").string(), w);
  write_safetensors((dir / "b.safetensors").string(),
                    {{"tokens", HostTensor::from_vector(tokens, {B, Tn + D + 1})}});
  std::ostringstream cmd;
  cmd << kPython << " " << script_path() << " --config " << (dir / "config.json") << " --weights "
      << (dir / "w.safetensors") << " --batch " << (dir / "b.safetensors") << " --out " << (dir / "out.safetensors")
      << " --dtype float64 > " << (dir / "ref.log") << " 2>&1";
  ASSERT_EQ(std::system(cmd.str().c_str()), 0) << "reference failed: " << cmd.str();
  TensorMap ref = read_safetensors((dir / "out.safetensors").string());

  model.zero_grad();
  Losses l = model.forward(tokens.data(), B, Tn);
  model.backward();
  auto scalar = [&](const std::string& name) { return tensor_at(ref, name).to_vector<double>().at(0); };
  auto rel = [](double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); };
  EXPECT_LE(rel(l.main, scalar("loss.main")), tol) << cs.preset << " loss.main " << l.main;
  for (int64_t k = 1; k <= D; ++k)
    EXPECT_LE(rel(l.mtp[k - 1], scalar("loss.mtp." + std::to_string(k))), tol) << "loss.mtp." << k;
  EXPECT_LE(rel(l.balance, scalar("loss.balance")), tol) << cs.preset << " loss.balance " << l.balance;
  EXPECT_LE(rel(l.total, scalar("loss.total")), tol) << cs.preset << " loss.total " << l.total;

  const HostTensor& logits = tensor_at(ref, "logits");
  ASSERT_EQ(logits.shape, (std::vector<int64_t>{B, Tn, V}));
  EXPECT_LE(max_rel_diff(as_double(model.logits()), logits.to_vector<double>()), tol) << cs.preset << " logits";
  for (int64_t k = 1; k <= D; ++k) {
    const HostTensor& mtp = tensor_at(ref, "mtp_logits." + std::to_string(k));
    EXPECT_LE(max_rel_diff(as_double(model.mtp_logits(k)), mtp.to_vector<double>()), tol)
        << cs.preset << " mtp_logits." << k;
  }

  double worst = 0;
  std::string worst_name;
  for (auto& p : model.parameters().all()) {
    double d = max_rel_diff(as_double(p->grad), tensor_at(ref, "grad." + p->name).template to_vector<double>());
    EXPECT_LE(d, tol) << cs.preset << " grad." << p->name;
    if (d > worst) worst = d, worst_name = p->name;
  }
  for (int64_t layer : model.moe_layer_indices()) {
    auto counts = tensor_at(ref, "expert_counts." + std::to_string(layer)).to_vector<double>();
    EXPECT_EQ(counts, model.expert_counts(layer)) << cs.preset << " expert_counts." << layer;
  }
  std::cout << "[ reference ] " << cs.preset << " " << (sizeof(T) == 8 ? "FP64" : "FP32")
            << ": worst gradient rel diff " << worst << " (" << worst_name << "), logits "
            << max_rel_diff(as_double(model.logits()), logits.to_vector<double>()) << "\n";
}

class ReferenceCompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = skip_reason();
    if (!why.empty()) GTEST_SKIP() << "PyTorch reference comparison skipped: " << why;
    dir_ = fs::temp_directory_path() / ("sy_trainer_ref_" + std::to_string(::getpid()));
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

// Seeds whose routing margins are far from ties (checked on the FP64 model).
template <class T>
std::vector<int64_t> setup_untied(Model<T>& model, const Case& cs) {
  Model<double> probe(model.config());
  for (uint64_t seed = cs.seed; seed < cs.seed + 100; ++seed) {
    testing::randomize_for_test(probe, seed);
    auto tokens = testing::random_tokens(probe.config(), cs.batch, cs.seq_len, seed + 1);
    probe.forward(tokens.data(), cs.batch, cs.seq_len);
    if (probe.min_routing_margin() > 1e-4) {
      testing::randomize_for_test(model, seed);
      return tokens;
    }
  }
  ADD_FAILURE() << "no untied seed";
  return {};
}

TEST_F(ReferenceCompareTest, NanoFp64MatchesLogitsLossesGradients) {
  Case cs{"nano", 2, 16, 21};
  ModelConfig c = model_config_preset(cs.preset);
  Model<double> model(c);
  auto tokens = setup_untied(model, cs);
  compare_with_reference(model, tokens, cs, 1e-11, dir_ / "nano64");
}

// MTP depth 2 (module 2 reads module 1's output) and YaRN (factor 4 over 16 positions,
// sequences of 32, so the frequency blend and the mscale^2 softmax factor are active).
TEST_F(ReferenceCompareTest, NanoMtpDepthTwoAndYarnFp64) {
  Case cs{"nano", 2, 32, 41};
  ModelConfig c = model_config_preset(cs.preset);
  c.num_nextn_predict_layers = 2;
  c.rope_scaling = RopeScaling{true, 4.0, 16, 32.0, 1.0, 0.707, 0.707};
  Model<double> model(c);
  auto tokens = setup_untied(model, cs);
  compare_with_reference(model, tokens, cs, 1e-11, dir_ / "nano_d2_yarn");
}

TEST_F(ReferenceCompareTest, TinyFp64MatchesLogitsLossesGradients) {
  Case cs{"tiny", 2, 100, 31};  // 100 > one 64-row attention block, the last one partial
  ModelConfig c = model_config_preset(cs.preset);
  Model<double> model(c);
  auto tokens = setup_untied(model, cs);
  compare_with_reference(model, tokens, cs, 1e-11, dir_ / "tiny64");
}

TEST_F(ReferenceCompareTest, TinyFp32MatchesReferenceWithinFp32Rounding) {
  Case cs{"tiny", 2, 100, 31};  // 100 > one 64-row attention block, the last one partial
  ModelConfig c = model_config_preset(cs.preset);
  Model<float> model(c);
  auto tokens = setup_untied(model, cs);
  compare_with_reference(model, tokens, cs, 1e-4, dir_ / "tiny32");
}

}  // namespace
}  // namespace switchyard::trainer
