// Where the time of measured F&B pairs goes, per rank and per phase (sy-overlap-perf
// --phases): a diagnosis of communication that an overlapped pair fails to hide.
//
// Input: every rank's FbPairTrace of measure_fb_overlap (timestamps are CLOCK_MONOTONIC, so
// ranks on one machine share one clock). Each collective's time (post to the end of its
// wait) is split into
//   lag    post -> its job starts on the communication thread (hand-off latency)
//   peers  its job starts -> the last rank of the group starts the same collective (waiting
//          for a late peer: skew or load imbalance between ranks, not transfer)
//   xfer   the last rank started -> its job finished here (the transfer proper)
//   wake   its job finished -> the waiting compute thread saw it
// and each overlapped stage k (collective of one micro-batch || compute of the other) into
// its compute and `exposed` = stage end - compute end (what the overlap did not hide).
// Values are medians over the measured reps, in milliseconds. Pure function.
#pragma once

#include <string>
#include <vector>

#include "switchyard/pipeline/synthetic_moe.h"

namespace switchyard::pipeline {

// Per rank: the totals of one pair (medians over reps, seconds).
struct FbRankPhases {
  int rank = 0;
  double serial_s = 0, overlapped_s = 0;
  double serial_compute_s = 0, serial_comm_s = 0;    // sums of the serial sub-steps
  double serial_peers_s = 0, serial_xfer_s = 0;      // parts of serial_comm_s
  double overlapped_compute_s = 0, exposed_s = 0;    // overlapped: compute, waits after compute
  double exposed_peers_s = 0;                        // part of exposed_s spent waiting for peers to join
};

// The group (medians over reps, seconds). compute_bound: the pair's time if every
// collective took no time, from the measured compute of every rank and stage: rank r posts
// collective k when its stage k starts, and stage k+1 starts at max(its stage-k compute end,
// the last rank's post of collective k) (the collective needs every rank); the pair ends
// with the last rank's last compute. It includes the imbalance between ranks (a slow rank
// delays everybody at the next collective), so exposed = overlapped - compute_bound is the
// communication the overlap left visible.
struct FbGroupPhases {
  double overlapped_s = 0;     // per rep the slowest rank's pair
  double compute_bound_s = 0;  // per rep, collectives taking no time
  double exposed_s = 0;        // per rep overlapped - compute_bound
};

// Text report (one table for the overlapped stages, one for the serial collectives, one of
// per-rank totals, the group line) and the per-rank totals and the group figures. Throws
// InvalidArgument if traces are not whole pairs of one MoE layer (8 sub-steps, 4
// collectives) for every rank and rep.
std::string fb_phase_report(const std::vector<FbPairTrace>& traces, std::vector<FbRankPhases>* totals = nullptr,
                            FbGroupPhases* group = nullptr);

}  // namespace switchyard::pipeline
