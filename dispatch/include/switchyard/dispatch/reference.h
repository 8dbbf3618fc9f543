// Flat reference dispatch/combine: the baselines sy-dispatch-perf and the tests compare with.
//
//   kNaive:     one all_to_all_v that sends one copy of a token per (token, expert) pair;
//               combine returns each expert's output unweighted and the source applies the
//               gate weights (sum over k ascending, FP32).
//   kRankDedup: one all_to_all_v that sends each token once per destination rank (DeepEP's
//               intranode rule, no node awareness); the receiver weights and sums its local
//               experts, the source sums the per-rank partials (ranks ascending, FP32).
// Both produce the expert-major rows in the same order as Buffer::dispatch with
// expert_alignment 1 (per local expert: source rank, then source token ascending), so the
// payloads can be compared bit for bit. Both are blocking and collective over the exchange;
// the byte counters follow TrafficStats.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/dispatch/buffer.h"

namespace switchyard::dispatch {

enum class ReferenceKind { kNaive, kRankDedup };
const char* reference_kind_name(ReferenceKind kind);  // "naive", "rank-dedup"

struct ReferenceDispatch {
  ReferenceKind kind = ReferenceKind::kNaive;
  comm::DataType dtype = comm::DataType::kBfloat16;
  int64_t num_tokens = 0;                 // T on this rank
  int top_k = 0;
  std::vector<int64_t> expert_offsets;    // [L + 1], no padding
  std::vector<uint8_t> expert_x;          // [P x H] of dtype
  std::vector<float> expert_x_scales;     // [P x S] (FP8 only)
  std::vector<int32_t> row_src_rank;      // [P]
  std::vector<int32_t> row_src_token;     // [P]
  std::vector<float> row_weight;          // [P] gate weight of the row
  TrafficStats stats;
  // Routing kept for combine: per peer, what was sent (naive: t * K + k; dedup: t) and how
  // many message rows arrived; arrival row -> (first expert-major row, local slot mask).
  std::vector<std::vector<int32_t>> sent;
  std::vector<int64_t> arrived;
  std::vector<std::vector<int64_t>> arrival_rows;  // expert-major rows fed by each arrival
};

// args as for Buffer::dispatch (cached_handle and expert_alignment are ignored).
ReferenceDispatch reference_dispatch(ReferenceKind kind, PeerExchange& ex, int num_experts, int64_t hidden,
                                     const DispatchArgs& args);

// expert_out [P x H] of dtype (kBfloat16 or kFloat32) in the reference's expert-major order;
// topk_weights [T x K] are the source's gate weights (used by kNaive; kRankDedup uses the
// dispatched ones). Returns y [T x H] of dtype.
CombineResult reference_combine(PeerExchange& ex, const ReferenceDispatch& d, const void* expert_out,
                                comm::DataType dtype, int64_t hidden, const float* topk_weights);

}  // namespace switchyard::dispatch
