// One step of a pipeline schedule on one rank: a compute chunk (F, B, W, full backward, an
// overlapped F&B pair), a point-to-point transfer of activations or gradients, or a gradient
// reduction over the copies of a stage's parameters.
//
// Vocabulary (shared by every file of this library):
//   stage       a contiguous slice of the model's layers; stages are numbered in data-flow order,
//               stage 0 eats the input and stage num_stages-1 computes the loss.
//   microbatch  one slice of the global batch; every micro-batch visits every stage.
//   F           forward of (stage, microbatch).
//   B           backward for inputs only (ZeroBubble "B"): produces the gradient for the previous
//               stage; the matching W must run later on the same rank.
//   W           backward for weights of (stage, microbatch); frees the activations.
//   BW          full backward = B then W in one chunk.
//   FB          an F of one micro-batch overlapped with a full backward (BW) of another on one
//               rank (DualPipe's "F&B"); the pair's forward is (stage, microbatch) and its
//               backward is (bwd_stage, bwd_microbatch).
// Inside F, B, BW and FB an MoE stage may list sub-steps (attention, dispatch, experts, combine)
// so that one micro-batch's dispatch/combine can travel while the other computes.
// Plain data: no ownership, no threading concerns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::pipeline {

enum class OpKind : uint8_t {
  kForward,          // "F"
  kBackwardInput,    // "B"
  kBackwardWeight,   // "W"
  kBackward,         // "BW" (full backward)
  kForwardBackward,  // "FB" (overlapped pair)
  kSendActivation,   // "SEND_ACT": output of F(stage, mb) to the rank of F(stage+1, mb)
  kRecvActivation,   // "RECV_ACT": that output, on the receiving rank
  kSendGrad,         // "SEND_GRAD": input gradient of B/BW(stage, mb) to the rank of stage-1
  kRecvGrad,         // "RECV_GRAD": that gradient, on the receiving rank
  kReduceGrad,       // "REDUCE": sum the gradients of `stage` over every rank holding a copy
};

const char* op_kind_name(OpKind kind);  // "F", "B", "W", "BW", "FB", "SEND_ACT", ...
// Parses a name printed by op_kind_name; throws InvalidArgument naming the bad token.
OpKind parse_op_kind(const std::string& name);

bool is_compute(OpKind kind);   // F, B, W, BW, FB
bool is_p2p(OpKind kind);       // SEND_*/RECV_*
bool is_send(OpKind kind);
bool is_recv(OpKind kind);

// MoE sub-steps of a compute chunk. Dispatch and combine are EP collectives: every rank of an
// expert-parallel group must issue them in the same order.
enum class SubStepKind : uint8_t { kAttention, kDispatch, kExperts, kCombine };
const char* sub_step_kind_name(SubStepKind kind);  // "ATTN", "DISPATCH", "EXPERTS", "COMBINE"

struct SubStep {
  SubStepKind kind = SubStepKind::kAttention;
  bool backward = false;  // part of the backward of (stage, microbatch)
  int layer = 0;          // MoE layer index inside the stage
  int stage = 0;
  int microbatch = 0;
  bool operator==(const SubStep&) const = default;
};

bool is_collective(const SubStep& s);  // dispatch or combine

struct Action {
  OpKind kind = OpKind::kForward;
  int stage = -1;       // F/B/W/BW: the chunk; SEND/RECV: stage that produced the tensor; REDUCE: stage
  int microbatch = -1;  // unused (-1) for REDUCE
  int peer = -1;        // SEND/RECV: the other rank
  int bwd_stage = -1;   // FB only: the backward half
  int bwd_microbatch = -1;
  std::vector<SubStep> sub_steps;  // optional MoE sub-steps, in issue order

  bool operator==(const Action&) const = default;
};

// Convenience constructors.
Action make_compute(OpKind kind, int stage, int microbatch);
Action make_fb(int f_stage, int f_microbatch, int b_stage, int b_microbatch);
Action make_p2p(OpKind kind, int stage, int microbatch, int peer);
Action make_reduce(int stage);

// "F s3 m5", "FB s0 m7 / s1 m3", "SEND_ACT s3 m5 r4", "REDUCE s2" (sub-steps not included).
std::string to_string(const Action& a);

}  // namespace switchyard::pipeline
