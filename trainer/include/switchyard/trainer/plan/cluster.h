// A cluster description for the planner: GPUs (or CPU ranks) per node, links, GEMM and
// attention throughput, memory. Loaded from JSON files (trainer/clusters/*.json) whose every
// number carries a "sources" entry saying where it comes from (optional measured fields too).
//
// Constraints: plain data; cluster_from_json() throws InvalidArgument naming the first
// missing or bad field. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchyard::trainer::plan {

// A measured GEMM rate for one weight shape (N out-features x K in-features) at large M.
struct GemmShapeRate {
  std::string precision;  // "fp8", "bf16" or "fp32"
  int64_t n = 0, k = 0;
  double tflops = 0;
};

struct ClusterSpec {
  std::string name;
  int gpus_per_node = 0;  // ranks per node (GPUs, or CPU processes)
  int nodes = 0;
  double intra_node_gbps = 0;  // NVLink (or shared memory) per GPU, one direction, GB/s
  double network_gbps = 0;  // InfiniBand (or TCP) per GPU, one direction, GB/s
  double memory_bandwidth_gbps = 0;  // HBM (or DRAM per rank), for element-wise ops
  double memory_gib = 0;  // usable device memory per GPU
  int num_sms = 1;  // streaming multiprocessors (1 for a CPU rank)
  // Dense peak of the datasheet per precision ("fp8", "bf16", "fp32"), TFLOP/s: the MFU peak.
  std::map<std::string, double> peak_tflops;
  // Sustained large-GEMM rate per precision, TFLOP/s (measured), all SMs.
  std::map<std::string, double> gemm_tflops;
  // Optional per-shape measured rates ("gemm_shapes"), used when an op's (N, K) matches.
  std::vector<GemmShapeRate> gemm_shapes;
  double attention_fwd_tflops = 0;  // causal attention kernel (BF16 or FP32), measured
  double attention_bwd_tflops = 0;
  // Optional measured rates (CPU calibration, calibrate.h); absent: the fallbacks below.
  // Element-wise op name ("moe.norm_swiglu_permute_combine", ...) -> GB/s of the planner's
  // bytes for that op; fallback memory_bandwidth_gbps.
  std::map<std::string, double> elementwise_gbps;
  double optimizer_gbps = 0;  // the optimizer pass's planner bytes per second; 0: memory_bandwidth_gbps
  // Fresh memory written per second (page faults + first write), for a trainer that
  // allocates its kept activations anew every step (the CPU trainer); 0: not charged.
  double first_touch_gbps = 0;
  // "all_reduce" (data-parallel gradient sync) and "all_to_all" (dispatch + combine) GB/s as
  // the planner's ring / all-to-all formulas count bytes; fallback the link bandwidths.
  std::map<std::string, double> collective_gbps;
  std::map<std::string, std::string> sources;  // field -> where the number comes from

  int num_gpus() const { return gpus_per_node * nodes; }
  // Large-GEMM rate for a precision; throws InvalidArgument naming the precision if absent.
  double gemm_rate(const std::string& precision) const;
  // The gemm_shapes rate for (precision, n, k), else gemm_rate(precision).
  double gemm_rate(const std::string& precision, int64_t n, int64_t k) const;
  // elementwise_gbps[op] if present, else memory_bandwidth_gbps.
  double elementwise_rate(const std::string& op) const;
  // collective_gbps[name] if present, else fallback_gbps.
  double collective_rate(const std::string& name, double fallback_gbps) const;
};

// Throws InvalidArgument naming the missing or bad field (and the file, for the path form).
ClusterSpec cluster_from_json(const std::string& text);
ClusterSpec cluster_from_file(const std::string& path);
// The JSON form cluster_from_json() reads back (every field, sources included).
std::string cluster_to_json(const ClusterSpec& c);

}  // namespace switchyard::trainer::plan
