// GemmPerfReport's text table and JSON (gemm_perf.h); built with and without CUDA.
#include <nlohmann/json.hpp>

#include <iomanip>
#include <sstream>

#include "switchyard/trainer/cuda/gemm_perf.h"

namespace switchyard::trainer::gpu {

std::string GemmPerfReport::text() const {
  std::ostringstream s;
  s << "sy-gemm-perf: " << device << ", cuBLASLt " << cublaslt_version << ", median of " << options.iters << "\n";
  s << std::setw(6) << "M" << std::setw(7) << "N" << std::setw(7) << "K" << std::setw(11) << "bf16_us" << std::setw(11)
    << "fp8_us" << std::setw(11) << "quant_us" << std::setw(12) << "bf16_TFLOPS" << std::setw(11) << "fp8_TFLOPS"
    << std::setw(9) << "fp8/bf16" << "\n";
  for (const auto& r : rows)
    s << std::setw(6) << r.shape.m << std::setw(7) << r.shape.n << std::setw(7) << r.shape.k << std::fixed
      << std::setprecision(1) << std::setw(11) << r.bf16_us << std::setw(11) << r.fp8_us << std::setw(11)
      << r.quantize_us << std::setw(12) << r.bf16_tflops << std::setw(11) << r.fp8_tflops << std::setprecision(2)
      << std::setw(9) << r.fp8_speedup << "\n";
  return s.str();
}

std::string GemmPerfReport::json() const {
  nlohmann::json j;
  j["device"] = device;
  j["cublaslt_version"] = cublaslt_version;
  j["iters"] = options.iters;
  for (const auto& r : rows)
    j["rows"].push_back({{"m", r.shape.m}, {"n", r.shape.n}, {"k", r.shape.k}, {"bf16_us", r.bf16_us},
                         {"fp8_us", r.fp8_us}, {"quantize_us", r.quantize_us}, {"bf16_tflops", r.bf16_tflops},
                         {"fp8_tflops", r.fp8_tflops}, {"fp8_speedup", r.fp8_speedup}});
  return j.dump(2);
}

}  // namespace switchyard::trainer::gpu
