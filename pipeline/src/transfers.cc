// Private: cross-rank inputs and outputs of compute chunks (used by add_p2p and the verifier).
#include "transfers.h"

namespace switchyard::pipeline::detail {

namespace {

void forward_io(const Schedule& s, int me, int stage, int mb, std::vector<Transfer>* in, std::vector<Transfer>* out) {
  const int rep = s.replica(me);
  if (stage > 0) {
    int src = s.rank_of(stage - 1, mb, rep);
    if (src != me && in) in->push_back({OpKind::kRecvActivation, stage - 1, mb, src});
  }
  if (stage + 1 < s.num_stages) {
    int dst = s.rank_of(stage + 1, mb, rep);
    if (dst != me && out) out->push_back({OpKind::kSendActivation, stage, mb, dst});
  }
}

void backward_io(const Schedule& s, int me, int stage, int mb, std::vector<Transfer>* in, std::vector<Transfer>* out) {
  const int rep = s.replica(me);
  if (stage + 1 < s.num_stages) {
    int src = s.rank_of(stage + 1, mb, rep);
    if (src != me && in) in->push_back({OpKind::kRecvGrad, stage + 1, mb, src});
  }
  if (stage > 0) {
    int dst = s.rank_of(stage - 1, mb, rep);
    if (dst != me && out) out->push_back({OpKind::kSendGrad, stage, mb, dst});
  }
}

}  // namespace

void chunk_transfers(const Schedule& s, int me, const Action& a, std::vector<Transfer>* in,
                     std::vector<Transfer>* out) {
  switch (a.kind) {
    case OpKind::kForward: forward_io(s, me, a.stage, a.microbatch, in, out); break;
    case OpKind::kBackwardInput:
    case OpKind::kBackward: backward_io(s, me, a.stage, a.microbatch, in, out); break;
    case OpKind::kForwardBackward:
      forward_io(s, me, a.stage, a.microbatch, in, out);
      backward_io(s, me, a.bwd_stage, a.bwd_microbatch, in, out);
      break;
    default: break;
  }
}

}  // namespace switchyard::pipeline::detail
