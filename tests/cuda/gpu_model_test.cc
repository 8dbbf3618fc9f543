// The GPU model (trainer/cuda/model.h) against the CPU Model<float> on the `tiny` preset:
// same weights and tokens, losses and every gradient compared, then AdamW steps and the
// loss going down. Without a GPU the GPU tests skip; the no-GPU error path is checked.
//
// Tolerances (docs/cuda-model.md explains them; the numbers were sized on the CPU by
// perturbing every weight by 2e-6 relative, a stand-in for summation-order differences):
// - kFloat32: both sides are FP32 with different summation orders (cuBLASLt vs OpenBLAS,
//   tree reductions vs loops, online softmax vs full rows): losses within 1e-5 relative;
//   each gradient within 5e-4 of its largest |value| elementwise and 5e-4 relative in L2
//   (the perturbation moved them by at most 5e-5 and 2.4e-5).
// - kBfloat16: the CPU reference rounds the same GEMM operands to BF16 (a test-local
//   LinearBackend mirroring linear.cc: every Linear but the MoE gates). Where an operand's
//   FP32 value differs in its last bits its BF16 rounding can flip by one BF16 ulp (2^-8
//   relative) and that jump propagates: the perturbation moved the worst gradient by 1.7e-2
//   (norm weights, sums that cancel), the losses by 2.2e-4, the balance loss by 5.8e-4.
//   Limits: gradients 2^-4 (max and L2), losses 2^-10, balance loss 2^-6 relative. Such
//   jumps also flip routing decisions, so this test routes by the expert bias (spaced 2.0:
//   every token takes the same experts, margins above 1) and the FP32 test covers real
//   routing. The BF16 losses are also within 2^-8 relative of the plain FP32 CPU model's.
// The FP32 comparisons need the same routing on both sides: the seed is chosen (on the CPU)
// for a smallest routing margin above 1e-4, far above FP32 differences (the perturbation
// moved scores by ~1e-7).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/fp8.h"
#include "switchyard/trainer/config.h"
#include "switchyard/trainer/cuda/fp8_blocks.h"
#include "switchyard/trainer/cuda/gemm.h"
#include "switchyard/trainer/cuda/model.h"
#include "switchyard/trainer/model.h"
#include "switchyard/trainer/train/fp8_gemm.h"
#include "switchyard/trainer/train/linear_backend.h"
#include "switchyard/trainer/train/optimizer.h"

namespace switchyard {
namespace {

namespace tg = trainer::gpu;
using trainer::Losses;
using trainer::ModelConfig;
using trainer::TensorMap;

constexpr int64_t kBatch = 2, kSeq = 32;

std::vector<int64_t> make_tokens(const ModelConfig& c, uint64_t seed, int64_t batch = kBatch) {
  const int64_t W = kSeq + c.num_nextn_predict_layers + 1;
  std::vector<int64_t> t(batch * W);
  uint64_t s = seed * 7919 + 17;
  for (auto& x : t) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<int64_t>((s >> 33) % static_cast<uint64_t>(c.vocab_size));
  }
  return t;
}

float bf16_round(float x) { return dispatch::bf16_to_float(dispatch::bf16_from_float(x)); }

// CPU twin of the GPU's kBfloat16 Linear layers: operands rounded to BF16, products summed
// in double (the GPU sums in FP32; the difference is far inside the tolerance). Claims every
// Linear weight but the MoE gates (FP32 on the GPU) by the address of its value or gradient.
class Bf16RoundingLinear : public trainer::LinearBackend {
 public:
  explicit Bf16RoundingLinear(const trainer::ParameterSet<float>& params) {
    for (const auto& p : params.all()) {
      if (p->shape.size() != 2 || p->name == "model.embed_tokens.weight") continue;
      if (p->name.find("mlp.gate.weight") != std::string::npos) continue;
      weights_.insert(p->value.data());
      grads_.insert(p->grad.data());
    }
    trainer::set_linear_backend(this);
  }
  ~Bf16RoundingLinear() override { trainer::set_linear_backend(nullptr); }

  bool forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y) override {
    if (!weights_.count(W)) return false;
    const auto xb = rounded(x, n * in), wb = rounded(W, out * in);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += double(xb[i * in + k]) * wb[o * in + k];
        y[i * out + o] = float(s);
      }
    return true;
  }
  bool backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                      bool accumulate) override {
    if (!weights_.count(W)) return false;
    const auto db = rounded(dy, n * out), wb = rounded(W, out * in);
    std::vector<double> acc(in);
    for (int64_t i = 0; i < n; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t o = 0; o < out; ++o) {
        const double g = db[i * out + o];
        for (int64_t k = 0; k < in; ++k) acc[k] += g * wb[o * in + k];
      }
      for (int64_t k = 0; k < in; ++k) dx[i * in + k] = float(accumulate ? dx[i * in + k] + acc[k] : acc[k]);
    }
    return true;
  }
  bool backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW) override {
    if (!grads_.count(dW)) return false;
    const auto db = rounded(dy, n * out), xb = rounded(x, n * in);
    std::vector<double> acc(out * in, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        const double g = db[i * out + o];
        if (g == 0) continue;
        for (int64_t k = 0; k < in; ++k) acc[o * in + k] += g * xb[i * in + k];
      }
    for (int64_t j = 0; j < out * in; ++j) dW[j] = float(dW[j] + acc[j]);
    return true;
  }

 private:
  static std::vector<float> rounded(const float* x, int64_t n) {
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = bf16_round(x[i]);
    return v;
  }
  std::set<const float*> weights_, grads_;
};

struct Tolerance {
  double loss_rel;     // |gpu - cpu| <= loss_rel * max(1, |cpu|) (main, mtp, total)
  double balance_rel;  // the same for the balance loss
  double max_rel;    // max_i |gpu_i - cpu_i| <= max_rel * max_i |cpu_i|
  double norm_rel;   // ||gpu - cpu||_2 <= norm_rel * ||cpu||_2
};

// Compares two tensor maps name by name; every failure names the tensor, the worst element
// (index, both values) and both measures. Prints the five tensors closest to failing.
void expect_close_maps(const TensorMap& gpu, const TensorMap& cpu, const Tolerance& tol, const std::string& what) {
  struct Row {
    double ratio;
    std::string text;
  };
  std::vector<Row> rows;
  ASSERT_EQ(gpu.size(), cpu.size()) << what << ": tensor counts differ";
  for (const auto& [name, ct] : cpu) {
    auto it = gpu.find(name);
    if (it == gpu.end()) {
      ADD_FAILURE() << what << ": GPU lacks \"" << name << "\"";
      continue;
    }
    const auto c = ct.to_vector<double>(), g = it->second.to_vector<double>();
    if (c.size() != g.size()) {
      ADD_FAILURE() << what << ": \"" << name << "\" has " << g.size() << " elements on the GPU, " << c.size()
                    << " on the CPU";
      continue;
    }
    double cmax = 0, dmax = 0, dn = 0, cn = 0;
    size_t worst = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      const double diff = std::abs(g[i] - c[i]);
      cmax = std::max(cmax, std::abs(c[i]));
      if (diff > dmax || std::isnan(diff)) dmax = diff, worst = i;
      dn += diff * diff;
      cn += c[i] * c[i];
    }
    dn = std::sqrt(dn), cn = std::sqrt(cn);
    const double lim_max = tol.max_rel * cmax + 1e-30, lim_norm = tol.norm_rel * cn + 1e-30;
    std::ostringstream s;
    s << what << " " << name << ": max |diff| " << dmax << " at " << worst << " (gpu " << g[worst] << ", cpu "
      << c[worst] << "), limit " << lim_max << " (max|cpu| " << cmax << "); L2 diff " << dn << ", limit " << lim_norm;
    const double ratio = std::max(dmax / lim_max, dn / lim_norm);
    rows.push_back({std::isnan(ratio) ? 1e30 : ratio, s.str()});
    if (!(dmax <= lim_max && dn <= lim_norm)) ADD_FAILURE() << s.str();
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.ratio > b.ratio; });
  for (size_t i = 0; i < std::min<size_t>(5, rows.size()); ++i)
    std::printf("[closest %zu, %.3g of the limit] %s\n", i + 1, rows[i].ratio, rows[i].text.c_str());
}

void expect_close_losses(const Losses& g, const Losses& c, double rel, double balance_rel, const std::string& what) {
  auto near = [&](double a, double b, const char* name, double rel) {
    EXPECT_LE(std::abs(a - b), rel * std::max(1.0, std::abs(b)))
        << what << " loss " << name << ": gpu " << a << ", cpu " << b;
  };
  near(g.main, c.main, "main", rel);
  ASSERT_EQ(g.mtp.size(), c.mtp.size());
  for (size_t k = 0; k < c.mtp.size(); ++k) near(g.mtp[k], c.mtp[k], "mtp", rel);
  near(g.balance, c.balance, "balance", balance_rel);
  near(g.total, c.total, "total", rel);
  std::printf("%s losses: gpu main %.9g total %.9g balance %.9g; cpu main %.9g total %.9g balance %.9g\n",
              what.c_str(), g.main, g.total, g.balance, c.main, c.total, c.balance);
}

// A CPU tiny model with a seed whose routing margin (with the reference's arithmetic) is
// above 1e-4, and its tokens.
struct Reference {
  uint64_t seed = 0;
  std::vector<int64_t> tokens;
};
Reference pick_seed(trainer::Model<float>& cpu) {
  for (uint64_t seed = 1; seed < 40; ++seed) {
    cpu.init_random(seed, 0.1);
    Reference r{seed, make_tokens(cpu.config(), seed)};
    cpu.forward(r.tokens.data(), kBatch, kSeq);
    if (cpu.min_routing_margin() > 1e-4) return r;
  }
  ADD_FAILURE() << "no seed in 1..39 gives a routing margin above 1e-4";
  return {};
}

void compare_one_step(tg::Precision precision, const Tolerance& tol) {
  const ModelConfig config = trainer::model_config_preset("tiny");
  trainer::Model<float> cpu(config);
  std::unique_ptr<Bf16RoundingLinear> rounding;
  std::unique_ptr<trainer::Fp8Linear> fp8;
  const bool bf16 = precision == tg::Precision::kBfloat16, fp32 = precision == tg::Precision::kFloat32;
  if (bf16) rounding = std::make_unique<Bf16RoundingLinear>(cpu.parameters());
  if (precision == tg::Precision::kFp8) fp8 = std::make_unique<trainer::Fp8Linear>(cpu.parameters(), trainer::Fp8Options{});
  // FP8: 128 tokens, so the weight gradients' token contraction fits cuBLASLt's FP8 GEMM.
  const int64_t batch = fp8 ? 2 * kBatch : kBatch;
  Reference ref{1, make_tokens(config, 1, batch)};
  if (fp32) ref = pick_seed(cpu);
  cpu.init_random(ref.seed, 0.1);
  if (!fp32)  // routing by the bias: every token takes the same experts, margins above 1
    for (int64_t l : cpu.moe_layer_indices())
      for (size_t e = 0; e < cpu.expert_bias(l).size(); ++e) cpu.expert_bias(l)[e] = 2.0f * float(e);
  cpu.zero_grad();
  const Losses lc = cpu.forward(ref.tokens.data(), batch, kSeq);
  cpu.backward();
  std::printf("seed %llu, CPU routing margin %.3g\n", static_cast<unsigned long long>(ref.seed),
              cpu.min_routing_margin());

  tg::Model gpu(config, precision);
  gpu.load_weights(cpu.weights());
  gpu.zero_grad();
  const Losses lg = gpu.forward(ref.tokens.data(), batch, kSeq);
  gpu.backward();
  const std::string what = tg::precision_name(precision);
  expect_close_losses(lg, lc, tol.loss_rel, tol.balance_rel, what);
  for (int64_t l : cpu.moe_layer_indices())
    EXPECT_EQ(gpu.expert_counts(l), cpu.expert_counts(l)) << what << ": expert counts of layer " << l;
  expect_close_maps(gpu.gradients(), cpu.gradients(), tol, what + " gradient");
  if (!bf16) return;
  // Against the plain FP32 CPU model: BF16 operands put up to 2^-9 relative error on each
  // operand, which averages out in the products; the losses stay within 2^-8 relative.
  // (The balance loss is left out: it counts top-K memberships, which BF16 may flip.)
  rounding.reset();
  const Losses lf = cpu.forward(ref.tokens.data(), kBatch, kSeq);
  EXPECT_NEAR(lg.main, lf.main, 0x1p-8 * std::abs(lf.main)) << "bf16 GPU vs fp32 CPU: main loss";
  EXPECT_NEAR(lg.mtp.at(0), lf.mtp.at(0), 0x1p-8 * std::abs(lf.mtp.at(0))) << "bf16 GPU vs fp32 CPU: MTP loss";
  EXPECT_NEAR(lg.total, lf.total, 0x1p-8 * std::abs(lf.total)) << "bf16 GPU vs fp32 CPU: total loss";
  std::printf("bf16 GPU vs fp32 CPU: main %.6f vs %.6f, total %.6f vs %.6f\n", lg.main, lf.main, lg.total, lf.total);
}

TEST(GpuModelTest, PrecisionNames) {
  EXPECT_EQ(tg::precision_from_name("fp32"), tg::Precision::kFloat32);
  EXPECT_EQ(tg::precision_from_name("bf16"), tg::Precision::kBfloat16);
  EXPECT_EQ(tg::precision_from_name("fp8"), tg::Precision::kFp8);
  EXPECT_STREQ(tg::precision_name(tg::Precision::kBfloat16), "bf16");
  EXPECT_THROW(tg::precision_from_name("fp16"), InvalidArgument);
}

// trainer/configs/small.json (the sy-gpu-train-perf preset) is the C++ preset "small".
TEST(GpuModelTest, SmallConfigFileIsThePreset) {
  const std::string path = std::string(SY_SOURCE_DIR) + "/trainer/configs/small.json";
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " is not here (a bundle run away from the source tree)";
  const ModelConfig file = trainer::model_config_from_file(path);
  EXPECT_EQ(trainer::model_config_to_json(file), trainer::model_config_to_json(trainer::model_config_preset("small")));
}

TEST(GpuModelTest, WithoutGpuThrowsUnsupported) {
  if (cuda::built() && cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present; this checks the no-GPU path";
  EXPECT_THROW(tg::Model(trainer::model_config_preset("nano"), tg::Precision::kFloat32), Unsupported);
}

TEST(GpuModelTest, Float32MatchesCpuModel) {
  SY_SKIP_WITHOUT_GPU();
  compare_one_step(tg::Precision::kFloat32, Tolerance{1e-5, 1e-5, 5e-4, 5e-4});
}

// FP8 against the CPU emulation of the recipe (Fp8Linear): one E4M3 ulp is 2^-3 relative,
// and the CPU perturbation (2e-7) moved the emulated model's gradients by up to 0.17 (L2)
// and its losses by 7e-4; shapes cuBLASLt's FP8 GEMM refuses (kv_a's dgrad, K = 160) run in
// BF16 on the GPU and FP8 on the CPU. Limits: gradients 0.5 (max and L2), losses 2^-6,
// balance 2^-4: loose, but a wrong scale layout or operand gives O(1) errors or worse.
TEST(GpuModelTest, Fp8MatchesCpuEmulation) {
  SY_SKIP_WITHOUT_GPU();
  compare_one_step(tg::Precision::kFp8, Tolerance{0x1p-6, 0x1p-4, 0.5, 0.5});
}

TEST(GpuModelTest, Bfloat16MatchesBf16RoundedCpuModel) {
  SY_SKIP_WITHOUT_GPU();
  compare_one_step(tg::Precision::kBfloat16, Tolerance{0x1p-10, 0x1p-6, 0x1p-4, 0x1p-4});
}

// Three steps of AdamW (and the expert-bias update) on both sides in FP32: the parameter
// updates agree. Adam's first step is lr * sign(g) for any nonzero g, so an element whose
// gradient is FP32 noise on both sides (a fraction of about 1e-6 of them) moves by lr either
// way: the check is on the updates w - w0, in L2 within 1e-2 (room for ~25 such elements
// per million), elementwise within 3x the largest CPU update (lr per step, so a flipped
// element in every step still passes; a wrong update is O(1) or more).
TEST(GpuModelTest, AdamWStepsMatchCpu) {
  SY_SKIP_WITHOUT_GPU();
  const ModelConfig config = trainer::model_config_preset("tiny");
  trainer::Model<float> cpu(config);
  const Reference ref = pick_seed(cpu);
  cpu.init_random(ref.seed, 0.1);
  tg::Model gpu(config, tg::Precision::kFloat32);
  const TensorMap w0 = cpu.weights();
  gpu.load_weights(w0);
  trainer::AdamWConfig ac;
  trainer::AdamW opt(cpu.parameters(), ac);
  gpu.set_optimizer(ac);
  constexpr int kSteps = 3;
  constexpr double kLr = 1e-3, kBiasRate = 1e-3;
  for (int step = 0; step < kSteps; ++step) {
    cpu.zero_grad();
    cpu.forward(ref.tokens.data(), kBatch, kSeq);
    cpu.backward();
    opt.step(kLr);
    cpu.update_expert_biases(kBiasRate);
    gpu.zero_grad();
    gpu.forward(ref.tokens.data(), kBatch, kSeq);
    gpu.backward();
    gpu.adamw_step(kLr);
    gpu.update_expert_biases(kBiasRate);
  }
  EXPECT_EQ(gpu.optimizer_steps(), kSteps);
  const TensorMap wc = cpu.weights(), wg = gpu.weights();
  TensorMap dc, dg;
  for (const auto& [name, t] : w0) {
    const auto a = t.to_vector<double>(), c = wc.at(name).to_vector<double>(), g = wg.at(name).to_vector<double>();
    std::vector<double> uc(a.size()), ug(a.size());
    for (size_t i = 0; i < a.size(); ++i) uc[i] = c[i] - a[i], ug[i] = g[i] - a[i];
    dc[name] = trainer::HostTensor::from_vector(uc, t.shape);
    dg[name] = trainer::HostTensor::from_vector(ug, t.shape);
  }
  expect_close_maps(dg, dc, Tolerance{0, 0, 3.0, 1e-2}, "fp32 AdamW update");
}

TEST(GpuModelTest, LossDecreasesOverSteps) {
  SY_SKIP_WITHOUT_GPU();
  const ModelConfig config = trainer::model_config_preset("tiny");
  tg::Model gpu(config, tg::Precision::kBfloat16);
  gpu.init_random(3, 0.02);
  const std::vector<int64_t> tokens = make_tokens(config, 3);
  std::vector<double> losses;
  for (int step = 0; step < 12; ++step) {
    gpu.zero_grad();
    losses.push_back(gpu.forward(tokens.data(), kBatch, kSeq).total);
    gpu.backward();
    gpu.adamw_step(3e-3);
    gpu.update_expert_biases(1e-3);
  }
  std::printf("bf16 losses:");
  for (double l : losses) std::printf(" %.4f", l);
  std::printf("\n");
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  // One batch, memorised: the CPU model (FP32, same settings) goes from 10.9 to 3.2 in
  // these 12 steps; well below the start here too.
  EXPECT_LT(losses.back(), 0.6 * losses.front());
}

// The 128x128 weight-block quantiser of the FP8 recipe against the CPU's
// fp8_quantize_blocks, bit for bit: codes, and scales in cuBLASLt's layout (zero padding).
// 200 x 600: partial blocks in both directions, 5 column blocks (L4 = 8); one block all
// zeros (the amax floor), one with a huge value (saturation to 448 elsewhere in the block).
TEST(GpuModelTest, Fp8BlockQuantizerMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  const int64_t rows = 200, cols = 600;
  std::vector<float> w(rows * cols);
  uint64_t st = 5;
  for (auto& x : w) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    x = float((double(st >> 11) * 0x1.0p-53 - 0.5) * 0.2);
  }
  for (int64_t r = 0; r < 128; ++r)
    for (int64_t c = 128; c < 256; ++c) w[r * cols + c] = 0.0f;
  w[150 * cols + 300] = 3e4f;
  for (bool pow2 : {false, true}) {
    const trainer::Fp8Matrix cpu = trainer::fp8_quantize_blocks(w.data(), rows, cols, pow2);
    const std::vector<float> want_scales = tg::block128_scales_for_device(cpu.scales, rows, cols);
    cuda::DeviceBuffer dw = testing::to_device(w), dcodes(rows * cols), dscales(want_scales.size() * sizeof(float));
    tg::quantize_fp8_blocks(dw.as<float>(), rows, cols, pow2, dcodes.as<uint8_t>(), dscales.as<float>(), nullptr);
    cuda::device_synchronize();
    const auto codes = testing::to_host<uint8_t>(dcodes, rows * cols);
    const auto scales = testing::to_host<float>(dscales, want_scales.size());
    EXPECT_EQ(testing::first_byte_difference(codes.data(), cpu.codes.data(), codes.size(), 1), "")
        << "codes, pow2 " << pow2;
    EXPECT_EQ(testing::first_byte_difference(scales.data(), want_scales.data(), scales.size() * 4, 4), "")
        << "scales, pow2 " << pow2;
  }
}

TEST(GpuModelTest, RejectsBadTokensAndNames) {
  SY_SKIP_WITHOUT_GPU();
  const ModelConfig config = trainer::model_config_preset("nano");
  tg::Model gpu(config, tg::Precision::kFloat32);
  std::vector<int64_t> tokens = make_tokens(config, 1);
  tokens[3] = config.vocab_size;
  EXPECT_THROW(gpu.forward(tokens.data(), kBatch, kSeq), InvalidArgument);
  EXPECT_THROW(gpu.backward(), InvalidArgument);  // no forward yet
  TensorMap w = gpu.weights();
  w.erase("lm_head.weight");
  EXPECT_THROW(gpu.load_weights(w), InvalidArgument);
  EXPECT_THROW(gpu.expert_counts(0), InvalidArgument);  // layer 0 is dense
}

}  // namespace
}  // namespace switchyard
