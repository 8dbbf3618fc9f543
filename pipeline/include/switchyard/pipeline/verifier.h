// Static and dynamic checks of a Schedule.
//
// verify() proves, or throws InvalidArgument naming the first problem (rank, action index and
// action):
//   - shape: placement tables and action fields are in range (check_shape);
//   - completeness: each (stage, micro-batch) of each replica has exactly one F and one full
//     backward (BW, or B and W), on the rank the placement names;
//   - order: per (stage, micro-batch), F before B/BW before W in the rank's list;
//   - transfers: every cross-rank input of a chunk is received by a RECV before the chunk and
//     every output is sent after it, to the right peer, exactly once; per ordered rank pair the
//     sends and receives list the same tensors in the same order;
//   - progress: the schedule completes when each rank executes its list in order, a batch of
//     consecutive SEND/RECV blocks until every operation in it has met its partner
//     (zero-buffer rendezvous), and REDUCE blocks until every holder of the stage reaches it;
//     on deadlock the message lists the action each stuck rank waits at;
//   - EP: within each EP group every rank issues the same dispatch/combine sub-steps in the
//     same order.
// Pure function; thread-safe.
#pragma once

#include <vector>

#include "switchyard/pipeline/schedule.h"

namespace switchyard::pipeline {

struct VerifyReport {
  // Largest number of (stage, micro-batch) activations alive at once on each rank, counted
  // in program order: F allocates one, BW or W frees it (B keeps it for the W).
  std::vector<int> peak_activations;
  int num_transfers = 0;   // matched SEND/RECV pairs
  int num_reductions = 0;  // REDUCE groups completed
};

VerifyReport verify(const Schedule& s);

// Only the static checks (shape, completeness, order, transfers, EP); no progress simulation.
void verify_static(const Schedule& s);

// Activation peaks as in VerifyReport (program order), without any other check.
std::vector<int> peak_activations(const Schedule& s);

}  // namespace switchyard::pipeline
