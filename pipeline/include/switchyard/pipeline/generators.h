// Schedule generators: 1F1B, interleaved 1F1B, ZB-H1, ZBV, DualPipe and DualPipeV.
//
// Every generator returns a complete Schedule (compute and P2P actions, plus REDUCE of
// mirrored gradients for DualPipe) for one pipeline replica, or throws InvalidArgument
// saying which (ranks, micro-batches) are valid for that schedule.
//
// DualPipe and DualPipeV reproduce the per-rank order of F, B, W, BW and overlapped FB pairs,
// and the P2P batching, of DeepSeek's reference (deepseek-ai/DualPipe dualpipe.py and
// dualpipev.py at 3da1bbe), including its special cases: the non-overlapped first main-step
// pair on the middle ranks (DualPipe) or the last rank (DualPipeV), the held-back sends of
// step 2, and the step-6 parity rule for when the input/weight split turns on.
// tests/pipeline/dualpipe_order.py re-derives that order independently for the tests.
#pragma once

#include <string>
#include <vector>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline {

enum class ScheduleKind { k1F1B, kInterleaved1F1B, kZBH1, kZBV, kDualPipe, kDualPipeV };

// "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipe", "dualpipev".
const char* schedule_kind_name(ScheduleKind kind);
// Accepts the names above; throws InvalidArgument listing them otherwise.
ScheduleKind parse_schedule_kind(const std::string& name);
std::vector<ScheduleKind> all_schedule_kinds();

// Per-chunk costs for the zero-bubble repository's ZBV heuristic (GeneratorOptions::zbv_order).
struct ZbvCosts {
  double f = 1, b = 1, w = 1;  // forward, input-gradient backward, weight gradient of one chunk
  double comm = 0;             // one P2P transfer
};

// Order of the ZBV generator. kGreedy: our unit-time list schedule (docs/pipeline.md).
// kZeroBubbleHeuristic: the V-schedule heuristic of sail-sg/zero-bubble-pipeline-parallelism
// (scheduler/zbv.py), which depends on the costs.
enum class ZbvOrder { kGreedy, kZeroBubbleHeuristic };

struct GeneratorOptions {
  int num_ranks = 0;          // pipeline ranks (devices)
  int num_microbatches = 0;   // total micro-batches of the step (both directions for DualPipe)
  int num_chunks = 2;         // interleaved 1F1B only: model chunks (virtual stages) per rank
  bool reduce_mirrored = true;  // DualPipe: append REDUCE of each stage over its two copies
  ZbvOrder zbv_order = ZbvOrder::kGreedy;  // zbv only
  ZbvCosts zbv_costs;                      // zbv with kZeroBubbleHeuristic only
};

// What a kind accepts, in words (used in error messages and --help).
std::string valid_sizes(ScheduleKind kind);
// True when generate() accepts these sizes.
bool is_valid(ScheduleKind kind, const GeneratorOptions& opt);

Schedule generate(ScheduleKind kind, const GeneratorOptions& opt);

// How add_p2p places SEND/RECV actions into a compute-only schedule.
enum class P2PPlacement {
  // Reference style (DualPipe, Megatron 1F1B): before each compute chunk one batch holds the
  // sends of the previous chunk's outputs and the receive of this chunk's input. Cheapest, but
  // can deadlock under rendezvous for some orders (interleaved 1F1B), which verify() reports.
  kBeforeChunk,
  // Rounds: the compute order is replayed in unit time; a transfer produced in round t is
  // sent and received in the batch that follows round t on both ranks. Deadlock-free by
  // construction for any dependency-consistent compute order.
  kRounds,
};

// Inserts SEND/RECV actions into a compute-only schedule (existing P2P actions are kept).
// Throws InvalidArgument if kRounds finds the compute order can never make progress.
void add_p2p(Schedule& s, P2PPlacement placement = P2PPlacement::kBeforeChunk);

// The same pipeline schedule on num_replicas pipeline copies (global rank = replica * pp_ranks
// + pp_rank, P2P inside a replica); the ranks of equal pp_rank form an EP group.
Schedule replicate(const Schedule& s, int num_replicas);

// Adds MoE sub-steps (attention, dispatch, experts, combine per layer) to every compute chunk,
// num_moe_layers layers per stage. F: ATTN, DISPATCH, EXPERTS, COMBINE per layer. Backward:
// COMBINE.B, EXPERTS.B, DISPATCH.B, ATTN.B per layer from the last layer. FB pairs interleave
// them as in DeepSeek-V3 figure 4 so each collective of one micro-batch is issued next to a
// compute sub-step of the other. For forward layer i paired with backward layer j = L-1-i:
//   COMBINE.B(j)  ATTN.F(i)  DISPATCH.F(i)  EXPERTS.B(j)  DISPATCH.B(j)  EXPERTS.F(i)
//   COMBINE.F(i)  ATTN.B(j)
void add_moe_sub_steps(Schedule& s, int num_moe_layers);
// The sub-steps add_moe_sub_steps gives one action (empty for W, P2P and REDUCE).
std::vector<SubStep> moe_sub_steps(const Action& a, int num_moe_layers);

}  // namespace switchyard::pipeline
