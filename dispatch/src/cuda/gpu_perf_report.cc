// GpuPerfReport's text table and JSON (gpu_perf.h); built with and without CUDA.
#include <nlohmann/json.hpp>

#include <iomanip>
#include <sstream>

#include "switchyard/dispatch/cuda/gpu_perf.h"

namespace switchyard::dispatch::gpu {

std::string GpuPerfReport::text() const {
  std::ostringstream s;
  s << "sy-cuda-perf: " << device << ", NCCL " << nccl_version << ", T=" << options.num_tokens
    << " H=" << options.hidden << " K=" << options.top_k << " E=" << options.num_experts << ", median of "
    << options.iters << ", " << device_sms << " SMs, default SM budget " << default_sms << "\n";
  s << std::left << std::setw(34) << "kernel" << std::right << std::setw(12) << "median_us" << std::setw(14) << "bytes"
    << std::setw(10) << "GB/s" << std::setw(12) << "vs_memcpy" << "\n";
  for (const auto& r : rows)
    s << std::left << std::setw(34) << r.name << std::right << std::fixed << std::setprecision(1) << std::setw(12)
      << r.median_us << std::setw(14) << r.bytes << std::setw(10) << r.gbps << std::setprecision(3) << std::setw(12)
      << r.vs_memcpy << "\n";
  s << "overlap_hidden " << std::setprecision(3) << overlap_hidden
    << " (dispatch with the default SM budget vs compute on the other SMs; 1 = fully hidden)\n";
  return s.str();
}

std::string GpuPerfReport::json() const {
  nlohmann::json j;
  j["device"] = device;
  j["nccl_version"] = nccl_version;
  j["tokens"] = options.num_tokens;
  j["hidden"] = options.hidden;
  j["top_k"] = options.top_k;
  j["experts"] = options.num_experts;
  j["iters"] = options.iters;
  j["device_sms"] = device_sms;
  j["default_sms"] = default_sms;
  j["overlap_hidden"] = overlap_hidden;
  for (const auto& r : rows)
    j["rows"].push_back({{"name", r.name}, {"median_us", r.median_us}, {"bytes", r.bytes}, {"gbps", r.gbps},
                         {"vs_memcpy", r.vs_memcpy}});
  return j.dump(2);
}

}  // namespace switchyard::dispatch::gpu
