// Names, predicates and printing of schedule actions.
#include "switchyard/pipeline/action.h"

#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {

namespace {
struct KindName {
  OpKind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {OpKind::kForward, "F"},           {OpKind::kBackwardInput, "B"},
    {OpKind::kBackwardWeight, "W"},    {OpKind::kBackward, "BW"},
    {OpKind::kForwardBackward, "FB"},  {OpKind::kSendActivation, "SEND_ACT"},
    {OpKind::kRecvActivation, "RECV_ACT"}, {OpKind::kSendGrad, "SEND_GRAD"},
    {OpKind::kRecvGrad, "RECV_GRAD"},  {OpKind::kReduceGrad, "REDUCE"},
};
}  // namespace

const char* op_kind_name(OpKind kind) {
  for (const auto& kn : kKindNames)
    if (kn.kind == kind) return kn.name;
  return "?";
}

OpKind parse_op_kind(const std::string& name) {
  for (const auto& kn : kKindNames)
    if (name == kn.name) return kn.kind;
  SY_THROW(InvalidArgument, "unknown schedule op '" << name
                                << "' (valid: F B W BW FB SEND_ACT RECV_ACT SEND_GRAD RECV_GRAD REDUCE)");
}

bool is_compute(OpKind k) {
  return k == OpKind::kForward || k == OpKind::kBackwardInput || k == OpKind::kBackwardWeight ||
         k == OpKind::kBackward || k == OpKind::kForwardBackward;
}
bool is_send(OpKind k) { return k == OpKind::kSendActivation || k == OpKind::kSendGrad; }
bool is_recv(OpKind k) { return k == OpKind::kRecvActivation || k == OpKind::kRecvGrad; }
bool is_p2p(OpKind k) { return is_send(k) || is_recv(k); }

const char* sub_step_kind_name(SubStepKind kind) {
  switch (kind) {
    case SubStepKind::kAttention: return "ATTN";
    case SubStepKind::kDispatch: return "DISPATCH";
    case SubStepKind::kExperts: return "EXPERTS";
    case SubStepKind::kCombine: return "COMBINE";
  }
  return "?";
}

bool is_collective(const SubStep& s) {
  return s.kind == SubStepKind::kDispatch || s.kind == SubStepKind::kCombine;
}

Action make_compute(OpKind kind, int stage, int microbatch) {
  Action a;
  a.kind = kind;
  a.stage = stage;
  a.microbatch = microbatch;
  return a;
}

Action make_fb(int f_stage, int f_microbatch, int b_stage, int b_microbatch) {
  Action a = make_compute(OpKind::kForwardBackward, f_stage, f_microbatch);
  a.bwd_stage = b_stage;
  a.bwd_microbatch = b_microbatch;
  return a;
}

Action make_p2p(OpKind kind, int stage, int microbatch, int peer) {
  Action a = make_compute(kind, stage, microbatch);
  a.peer = peer;
  return a;
}

Action make_reduce(int stage) {
  Action a;
  a.kind = OpKind::kReduceGrad;
  a.stage = stage;
  return a;
}

std::string to_string(const Action& a) {
  std::ostringstream os;
  os << op_kind_name(a.kind) << " s" << a.stage;
  if (a.kind == OpKind::kReduceGrad) return os.str();
  os << " m" << a.microbatch;
  if (a.kind == OpKind::kForwardBackward) os << " / s" << a.bwd_stage << " m" << a.bwd_microbatch;
  if (is_p2p(a.kind)) os << " r" << a.peer;
  return os.str();
}

}  // namespace switchyard::pipeline
