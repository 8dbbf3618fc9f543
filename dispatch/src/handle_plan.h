// Handle::Plan: the routing of one dispatch, kept for combine, backward and cached dispatch.
#pragma once

#include <cstdint>
#include <vector>

#include "switchyard/dispatch/buffer.h"

namespace switchyard::dispatch {

struct Handle::Plan {
  int num_ranks = 0;
  int rank = 0;
  int64_t num_tokens = 0;  // T
  int top_k = 0;           // K
  int64_t hidden = 0;      // H
  int num_local_experts = 0;
  bool two_hop = false;
  // Stage A: flat = token -> rank; two-hop = token -> rail peer of each destination node.
  std::vector<std::vector<int32_t>> a_send;  // [R] source token ids
  std::vector<int64_t> a_recv;               // [R] rows arriving from each rank
  // Stage B (two-hop only): forwarding inside the node; ids index the stage-A arrival rows.
  std::vector<std::vector<int32_t>> b_send;  // [R]
  std::vector<int64_t> b_recv;               // [R]
  std::vector<int64_t> num_tokens_per_rank;  // [R] final destinations (logical bytes)
  // Final arrival row (stage A flat, stage B two-hop) -> canonical received index.
  std::vector<int32_t> arrival_to_canonical;  // [M]
  std::vector<int32_t> canonical_to_arrival;  // [M]
  int64_t num_recv = 0;                       // M
  std::vector<int32_t> recv_src_rank;         // [M]
  std::vector<int32_t> recv_src_token;        // [M]
  std::vector<int64_t> recv_topk_idx;         // [M x K] local ids or -1
  std::vector<float> recv_topk_weights;       // [M x K]
  std::vector<int64_t> expert_offsets;        // [L + 1]
  std::vector<int32_t> row_token;             // [P]
  std::vector<int32_t> row_slot;              // [P]
  std::vector<int64_t> slot_row;              // [M x K] expert-major row of (token, slot) or -1
};

}  // namespace switchyard::dispatch
