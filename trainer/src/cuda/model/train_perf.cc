// The sy-gpu-train-perf measurement (see cuda/train_perf.h).
#include "switchyard/trainer/cuda/train_perf.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <sstream>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/trainer/cuda/gemm.h"

namespace switchyard::trainer::gpu {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

ModelConfig resolve_config(const std::string& name) {
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return model_config_from_file(name);
  return model_config_preset(name);
}

// Median TFLOP/s of a BF16 cuBLASLt GEMM [S x S] x [S x S]^T, BF16 out.
double bf16_gemm_tflops(int64_t S, int iters) {
  CublasLt lt;
  cuda::Stream stream;
  cuda::DeviceBuffer a(S * S * 2), b(S * S * 2), d(S * S * 2);
  // 0x3c3c is about 0.0115 in BF16: finite values, no overflow in the sums.
  SY_CUDA_CHECK(cudaMemsetAsync(a.data(), 0x3c, S * S * 2, stream.get()), "train perf: baseline operands");
  SY_CUDA_CHECK(cudaMemsetAsync(b.data(), 0x3c, S * S * 2, stream.get()), "train perf: baseline operands");
  cuda::Event t0, t1;
  std::vector<double> ms;
  for (int i = 0; i < iters + 2; ++i) {
    t0.record(stream.get());
    gemm_bf16_nt(lt, a.as<uint16_t>(), b.as<uint16_t>(), d.data(), OutType::kBfloat16, S, S, S, stream.get());
    t1.record(stream.get());
    t1.synchronize();
    if (i >= 2) ms.push_back(t1.elapsed_ms_since(t0));
  }
  return 2.0 * double(S) * double(S) * double(S) / (median(ms) * 1e-3) / 1e12;
}

}  // namespace

double train_step_flops(const ModelConfig& c, int64_t batch, int64_t seq_len) {
  const double d = c.hidden_size, H = c.num_attention_heads, dqk = c.qk_head_dim(), dv = c.v_head_dim;
  const double attn_proj = d * c.q_lora_rank + c.q_lora_rank * H * dqk + d * (c.kv_lora_rank + c.qk_rope_head_dim) +
                           c.kv_lora_rank * H * (c.qk_nope_head_dim + dv) + H * dv * d;
  const double dense = 3.0 * d * c.intermediate_size;
  const double moe = d * c.n_routed_experts +
                     3.0 * d * c.moe_intermediate_size * double(c.num_experts_per_tok + c.n_shared_experts);
  const int64_t L = c.num_hidden_layers, D = c.num_nextn_predict_layers;
  double per_token = d * c.vocab_size;  // head
  for (int64_t l = 0; l < L + D; ++l) per_token += attn_proj + (c.is_moe_layer(l) ? moe : dense);
  per_token += D * (2.0 * d * d + d * c.vocab_size);  // MTP projection and head
  const double tokens = double(batch) * double(seq_len);
  const double attention = 3.0 * 2.0 * H * (dqk + dv) * double(seq_len) * double(seq_len) / 2.0 * double(batch) *
                           double(L + D);
  return 6.0 * per_token * tokens + attention;
}

TrainPerfReport run_train_perf(const TrainPerfOptions& o) {
  SY_REQUIRE(o.batch >= 1 && o.seq_len >= 1 && o.steps >= 1 && o.warmup >= 0,
             "train perf: batch " << o.batch << ", seq " << o.seq_len << ", steps " << o.steps << ", warmup "
                                  << o.warmup << ": batch, seq and steps must be >= 1, warmup >= 0");
  const ModelConfig config = resolve_config(o.config);
  if (cuda::device_count() == 0) SY_THROW(Unsupported, "train perf: no GPU on this machine");
  TrainPerfReport r;
  r.device = cuda::device_description(cuda::current_device());
  r.options = o;
  Model model(config, o.precision);
  model.init_random(o.seed, 0.02);
  r.parameters = model.num_parameters();
  r.flops_per_step = train_step_flops(config, o.batch, o.seq_len);

  const int64_t W = o.seq_len + config.num_nextn_predict_layers + 1;
  std::vector<int64_t> tokens(o.batch * W);
  uint64_t state = o.seed;
  for (auto& t : tokens) {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    t = static_cast<int64_t>((z ^ (z >> 31)) % static_cast<uint64_t>(config.vocab_size));
  }
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model.zero_grad();
    const Losses l = model.forward(tokens.data(), o.batch, o.seq_len);
    model.backward();
    model.adamw_step(o.lr);
    const auto t1 = std::chrono::steady_clock::now();
    r.losses.push_back(l.total);
    if (i >= o.warmup) r.step_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  r.step_ms_median = median(r.step_ms);
  r.tokens_per_s = double(o.batch * o.seq_len) / (r.step_ms_median * 1e-3);
  r.model_tflops = r.flops_per_step / (r.step_ms_median * 1e-3) / 1e12;
  r.gemm_bf16_tflops = bf16_gemm_tflops(o.baseline_size, 10);
  r.mfu_ratio = r.gemm_bf16_tflops > 0 ? r.model_tflops / r.gemm_bf16_tflops : 0;
  return r;
}

std::string TrainPerfReport::text() const {
  std::ostringstream s;
  s << "device " << device << "\n"
    << "config " << options.config << ", precision " << precision_name(options.precision) << ", batch "
    << options.batch << " x seq " << options.seq_len << ", " << parameters << " parameters\n"
    << std::fixed << std::setprecision(2) << "step " << step_ms_median << " ms (median of " << step_ms.size()
    << ")  tokens/s " << std::setprecision(0) << tokens_per_s << std::setprecision(2) << "  model TFLOP/s "
    << model_tflops << "\n"
    << "baseline BF16 GEMM " << options.baseline_size << "^3: " << gemm_bf16_tflops << " TFLOP/s  ratio "
    << std::setprecision(3) << mfu_ratio << "\n"
    << "loss " << std::setprecision(4) << (losses.empty() ? 0.0 : losses.front()) << " -> "
    << (losses.empty() ? 0.0 : losses.back()) << "\n";
  return s.str();
}

std::string TrainPerfReport::json() const {
  nlohmann::json j;
  j["device"] = device;
  j["config"] = options.config;
  j["precision"] = precision_name(options.precision);
  j["batch"] = options.batch;
  j["seq_len"] = options.seq_len;
  j["parameters"] = parameters;
  j["flops_per_step"] = flops_per_step;
  j["step_ms"] = step_ms;
  j["step_ms_median"] = step_ms_median;
  j["tokens_per_s"] = tokens_per_s;
  j["model_tflops"] = model_tflops;
  j["baseline_gemm_size"] = options.baseline_size;
  j["gemm_bf16_tflops"] = gemm_bf16_tflops;
  j["mfu_ratio"] = mfu_ratio;
  j["losses"] = losses;
  return j.dump();
}

}  // namespace switchyard::trainer::gpu
