// The sy-dispatch-perf benchmark (DeepEP's test scripts as a library call).
//
// Every rank makes T tokens of hidden H with random router scores (optionally skewed toward
// the first experts), routes them with the V3 group-limited top-k, then:
//   1. checks Buffer::dispatch/combine against both flat references (reference.h): the
//      expert-major payload bit for bit (BF16 and FP8) and combine within BF16 rounding;
//   2. times FP8 and BF16 dispatch and BF16 combine for the Buffer and both references
//      (median of `iters` timed runs after `warmup`, each between two barriers), and reports
//      logical and wire GB/s per rank and the ratios against the references.
// Collective over the exchange; every rank returns the same report (times are the max over
// ranks of each run).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch {

struct PerfOptions {
  int64_t num_tokens = 4096;  // per rank
  int64_t hidden = 7168;
  int num_experts = 256;
  int top_k = 8;
  int num_groups = 8;
  int top_groups = 4;
  double skew = 0.0;     // score bonus for the first experts: s_e += skew * (1 - e / E)
  int iters = 5;
  int warmup = 1;
  uint64_t seed = 1;
  bool two_hop = true;
  bool check = true;
  bool time_naive = true;        // time the naive reference too (it is always checked)
  bool low_latency = false;      // also time the low-latency mode
  int64_t ll_tokens = 128;       // tokens per rank in low-latency mode
};

struct PerfRow {
  std::string impl;      // "buffer", "rank-dedup", "naive", "memcpy", "low-latency"
  std::string op;        // "dispatch", "combine", "dispatch+combine", ...
  std::string dtype;     // "fp8", "bf16"
  double median_us = 0;
  double min_us = 0;        // fastest timed run (JSON only)
  std::vector<double> times_us;  // every timed run in order, slowest rank's (JSON only)
  double logical_gbps = 0;  // per rank
  double wire_gbps = 0;     // per rank
  int64_t logical_bytes = 0;  // per rank (mean)
  int64_t wire_bytes = 0;     // per rank (mean)
};

struct PerfReport {
  PerfOptions options;
  int ranks = 0, nodes = 0;
  bool two_hop = false;
  bool checks_passed = false;
  std::vector<std::string> check_lines;
  std::vector<PerfRow> rows;
  // speed-ups (reference time / buffer time) of FP8 dispatch + BF16 combine, and the FP8/BF16
  // dispatch time ratio of the Buffer.
  double speedup_vs_dedup = 0, speedup_vs_naive = 0, fp8_over_bf16_dispatch = 0;
  double ll_over_memcpy = 0;  // low-latency dispatch time / memcpy of the same bytes
  int64_t wire_bytes_predicted = 0, wire_bytes_measured = 0;  // FP8 dispatch, summed over ranks
  std::string text() const;
  std::string json() const;
};

PerfReport run_dispatch_perf(PeerExchange& ex, const PerfOptions& options);
// The checks only (step 1, plus a low-latency round trip when options.low_latency); for
// multi-process tests.
PerfReport run_dispatch_checks(PeerExchange& ex, const PerfOptions& options);

}  // namespace switchyard::dispatch
