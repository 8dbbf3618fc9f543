// sy-trainer-bench: training-step throughput of the CPU model (forward + split backward +
// AdamW + bias update) and its achieved GFLOP/s against an SGEMM measured in the same run;
// optionally runs the PyTorch reference benchmark (tests/reference/bench_train_step.py)
// with the same config, batch, sequence and thread count, and reports the ratio.
//
// Not a test: run by hand (docs/perf.md "## trainer model"). C++ rounds and reference runs
// alternate (--rounds) so both see similar load on a shared machine; medians over all.
#include <cblas.h>
#include <gflags/gflags.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "switchyard/trainer/config.h"
#include "switchyard/trainer/model.h"

DEFINE_string(config, "tiny", "preset name (nano, tiny, small) or a config.json path");
DEFINE_int32(batch, 4, "sequences per step");
DEFINE_int32(seq, 128, "tokens per sequence");
DEFINE_int32(threads, 1, "BLAS threads (the reference uses the same)");
DEFINE_int32(steps, 7, "timed steps (median reported)");
DEFINE_int32(warmup, 2, "untimed steps");
DEFINE_string(reference, "", "path of tests/reference/bench_train_step.py to run in the same run ('' = skip)");
DEFINE_int32(rounds, 3, "alternations of (C++ steps, reference run); medians over all rounds");
DEFINE_bool(json, false, "print one JSON line instead of text");

namespace {

using namespace switchyard::trainer;
using Clock = std::chrono::steady_clock;

// Process CPU time in seconds: with one BLAS thread it excludes the time the scheduler gave
// to other processes on a shared machine (wall time is reported too).
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Matmul FLOPs of one training step (forward x3: backward is two GEMMs per forward GEMM);
// attention counted causal (half of the T x T score and PV products).
double step_flops(const ModelConfig& c, int64_t B, int64_t T) {
  const double d = c.hidden_size, H = c.num_attention_heads, N = double(B) * T;
  const double attn = d * c.q_lora_rank + c.q_lora_rank * H * c.qk_head_dim() + d * (c.kv_lora_rank + c.qk_rope_head_dim) +
                      c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * d;
  const double dense = 3 * d * c.intermediate_size;
  const double moe = (c.num_experts_per_tok + c.n_shared_experts) * 3 * d * c.moe_intermediate_size + c.n_routed_experts * d;
  const int64_t layers = c.num_hidden_layers + c.num_nextn_predict_layers;
  double per_token = 0;
  for (int64_t l = 0; l < layers; ++l) per_token += attn + (c.is_moe_layer(l) ? moe : dense);
  per_token += (1 + c.num_nextn_predict_layers) * double(c.vocab_size) * d;  // heads
  per_token += c.num_nextn_predict_layers * 2 * d * d;                       // eh_proj
  double fwd = 2 * N * per_token;
  fwd += layers * 2.0 * B * H * (double(T) * T / 2) * (c.qk_head_dim() + c.v_head_dim);
  return 3 * fwd;
}

// One timed 1024^3 SGEMM (the baseline), run after every model step so both see the same
// machine load.
struct Timing {
  double wall = 0, cpu = 0;
};

Timing sgemm_seconds() {
  constexpr int n = 1024;
  static std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  auto t0 = Clock::now();
  double c0 = cpu_seconds();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  return {std::chrono::duration<double>(Clock::now() - t0).count(), cpu_seconds() - c0};
}

// Plain AdamW over all parameters (the reference step includes its optimizer).
struct AdamW {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, wd = 0.1;
  int64_t step = 0;
  std::vector<std::vector<float>> m, v;
  void update(ParameterSet<float>& params) {
    auto& all = params.all();
    if (m.empty()) {
      for (auto& p : all) m.emplace_back(p->numel(), 0.0f), v.emplace_back(p->numel(), 0.0f);
    }
    ++step;
    const float b1 = float(beta1), b2 = float(beta2);
    const float c1 = float(1 / (1 - std::pow(beta1, step))), c2 = float(1 / (1 - std::pow(beta2, step)));
    for (size_t i = 0; i < all.size(); ++i) {
      float* w = all[i]->value.data();
      const float* g = all[i]->grad.data();
      float* mi = m[i].data();
      float* vi = v[i].data();
      for (int64_t j = 0; j < all[i]->numel(); ++j) {
        mi[j] = b1 * mi[j] + (1 - b1) * g[j];
        vi[j] = b2 * vi[j] + (1 - b2) * g[j] * g[j];
        w[j] -= float(lr) * (mi[j] * c1 / (std::sqrt(vi[j] * c2) + float(eps)) + float(wd) * w[j]);
      }
    }
  }
};

ModelConfig load_config(const std::string& s) {
  if (s.find(".json") != std::string::npos) return model_config_from_file(s);
  return model_config_preset(s);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("training-step throughput of the CPU DeepSeek-V3 model");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    openblas_set_num_threads(FLAGS_threads);
    ModelConfig c = load_config(FLAGS_config);
    const int64_t B = FLAGS_batch, T = FLAGS_seq;
    Model<float> model(c);
    std::mt19937_64 rng(2);
    std::uniform_int_distribution<int64_t> tok(0, c.vocab_size - 1);
    std::vector<int64_t> tokens(B * (T + c.num_nextn_predict_layers + 1));
    AdamW opt;
    std::vector<double> times, sgemm_times, cpu_times, sgemm_cpu_times;
    double loss = 0;
    auto run_steps = [&](int count, bool timed) {
      for (int s = 0; s < count; ++s) {
        for (auto& t : tokens) t = tok(rng);
        auto t0 = Clock::now();
        double c0 = cpu_seconds();
        model.zero_grad();
        loss = model.forward(tokens.data(), B, T).total;
        model.backward();
        opt.update(model.parameters());
        model.update_expert_biases(1e-3);
        double dt = std::chrono::duration<double>(Clock::now() - t0).count();
        double dc = cpu_seconds() - c0;
        Timing sg = sgemm_seconds();
        if (timed) {
          times.push_back(dt), cpu_times.push_back(dc);
          sgemm_times.push_back(sg.wall), sgemm_cpu_times.push_back(sg.cpu);
        }
      }
    };
    // The reference: same config, batch, sequence, threads and step counts; its JSON line
    // carries its median tokens/s.
    std::string ref_line;
    auto run_reference = [&]() -> double {
      // A preset name maps to trainer/configs/<name>.json next to the reference script.
      std::string cfg = FLAGS_config;
      if (cfg.find(".json") == std::string::npos) {
        std::string root = FLAGS_reference.substr(0, FLAGS_reference.rfind("tests/reference/"));
        cfg = root + "trainer/configs/" + FLAGS_config + ".json";
      }
      std::string cmd = "/usr/bin/python3 " + FLAGS_reference + " --config " + cfg + " --batch " + std::to_string(B) +
                        " --seq " + std::to_string(T) + " --threads " + std::to_string(FLAGS_threads) + " --steps " +
                        std::to_string(FLAGS_steps) + " --warmup " + std::to_string(FLAGS_warmup) + " 2>/dev/null";
      FILE* pipe = popen(cmd.c_str(), "r");
      char buf[4096];
      while (pipe && fgets(buf, sizeof buf, pipe)) ref_line = buf;
      if (pipe) pclose(pipe);
      auto pos = ref_line.find("\"tokens_per_s\"");
      return pos == std::string::npos ? 0.0 : std::stod(ref_line.substr(ref_line.find(':', pos) + 1));
    };
    // Alternate C++ and reference rounds so both see similar machine load. Each round
    // starts, like a reference run, from the initial weights and a fresh optimizer (so the
    // routing has not drifted further than the reference's).
    std::vector<double> ref_rates;
    const int rounds = FLAGS_reference.empty() ? 1 : std::max(1, FLAGS_rounds);
    for (int r = 0; r < rounds; ++r) {
      model.init_random(1, 0.006 * 4);
      opt = AdamW{};
      run_steps(FLAGS_warmup, false);
      run_steps(FLAGS_steps, true);
      if (!FLAGS_reference.empty()) ref_rates.push_back(run_reference());
    }
    const double step_s = median(times);
    const double tokens_per_s = B * T / step_s;
    const double gflops = step_flops(c, B, T) / step_s / 1e9;
    const double sgemm = 2.0 * 1024 * 1024 * 1024 / median(sgemm_times) / 1e9;
    const double gflops_cpu = step_flops(c, B, T) / median(cpu_times) / 1e9;
    const double sgemm_cpu = 2.0 * 1024 * 1024 * 1024 / median(sgemm_cpu_times) / 1e9;
    const double ref_tokens_per_s = ref_rates.empty() ? 0.0 : median(ref_rates);

    if (FLAGS_json) {
      std::printf(
          "{\"config\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"threads\": %d, \"step_s\": %.6f, \"tokens_per_s\": %.1f, "
          "\"gflops\": %.2f, \"sgemm_gflops\": %.2f, \"gflops_vs_sgemm\": %.3f, \"reference_tokens_per_s\": %.1f, "
          "\"speedup_vs_reference\": %.3f, \"cpu_gflops\": %.2f, \"cpu_sgemm_gflops\": %.2f, \"cpu_gflops_vs_sgemm\": %.3f, "
          "\"loss\": %.6f}\n",
          FLAGS_config.c_str(), (long long)B, (long long)T, FLAGS_threads, step_s, tokens_per_s, gflops, sgemm,
          gflops / sgemm, ref_tokens_per_s, ref_tokens_per_s > 0 ? tokens_per_s / ref_tokens_per_s : 0.0, gflops_cpu,
          sgemm_cpu, gflops_cpu / sgemm_cpu, loss);
    } else {
      std::printf("config %s batch %lld seq %lld threads %d\n", FLAGS_config.c_str(), (long long)B, (long long)T,
                  FLAGS_threads);
      std::printf("step %.4f s (median of %zu), %.1f tokens/s, %.2f GFLOP/s = %.1f%% of SGEMM %.2f GFLOP/s\n", step_s,
                  times.size(), tokens_per_s, gflops, 100 * gflops / sgemm, sgemm);
      std::printf("CPU time: %.2f GFLOP/s = %.1f%% of SGEMM %.2f GFLOP/s\n", gflops_cpu, 100 * gflops_cpu / sgemm_cpu,
                  sgemm_cpu);
      if (!FLAGS_reference.empty())
        std::printf("reference %.1f tokens/s (median of %zu runs) -> %.2fx (last reference line: %s)\n",
                    ref_tokens_per_s, ref_rates.size(), ref_tokens_per_s > 0 ? tokens_per_s / ref_tokens_per_s : 0.0,
                    ref_line.c_str());
      for (int64_t l : model.moe_layer_indices()) {
        LoadStats st = model.expert_load(l);
        std::printf("layer %lld expert load max/mean %.2f (max %.0f, mean %.1f tokens)\n", (long long)l,
                    st.max_over_mean(), st.max_load, st.mean_load);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sy-trainer-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
