// A cluster description for the planner: GPUs (or CPU ranks) per node, links, GEMM and
// attention throughput, memory. Loaded from JSON files (trainer/clusters/*.json) whose every
// number carries a "sources" entry saying where it comes from.
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
  std::map<std::string, std::string> sources;  // field -> where the number comes from

  int num_gpus() const { return gpus_per_node * nodes; }
  // Large-GEMM rate for a precision; throws InvalidArgument naming the precision if absent.
  double gemm_rate(const std::string& precision) const;
  // The gemm_shapes rate for (precision, n, k), else gemm_rate(precision).
  double gemm_rate(const std::string& precision, int64_t n, int64_t k) const;
};

// Throws InvalidArgument naming the missing or bad field (and the file, for the path form).
ClusterSpec cluster_from_json(const std::string& text);
ClusterSpec cluster_from_file(const std::string& path);

}  // namespace switchyard::trainer::plan
