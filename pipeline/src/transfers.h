// Private: which tensors a compute chunk receives from and sends to other ranks.
#pragma once

#include <vector>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline::detail {

struct Transfer {
  OpKind kind;     // SEND_* or RECV_* as seen from this rank
  int stage;       // stage that produced the tensor
  int microbatch;
  int peer;        // the other global rank
  bool operator==(const Transfer&) const = default;
};

// Inputs (RECV_*) and outputs (SEND_*) of compute action `a` on global rank `me`.
void chunk_transfers(const Schedule& s, int me, const Action& a, std::vector<Transfer>* in,
                     std::vector<Transfer>* out);

}  // namespace switchyard::pipeline::detail
