// fb_phase_report: the split of hand-made two-rank timelines (times in seconds chosen so every
// phase is a whole number) into compute, waits for peers, transfer and exposed time,
// against the values worked out by hand in the comments; and refusal of incomplete traces.
#include "switchyard/pipeline/fb_overlap_report.h"

#include <gtest/gtest.h>

#include "switchyard/common/error.h"

namespace switchyard::pipeline {
namespace {

SubStep sub(SubStepKind kind, bool backward) {
  SubStep s;
  s.kind = kind;
  s.backward = backward;
  return s;
}

const SubStep kF[4] = {sub(SubStepKind::kAttention, false), sub(SubStepKind::kDispatch, false),
                       sub(SubStepKind::kExperts, false), sub(SubStepKind::kCombine, false)};
const SubStep kB[4] = {sub(SubStepKind::kCombine, true), sub(SubStepKind::kExperts, true),
                       sub(SubStepKind::kDispatch, true), sub(SubStepKind::kAttention, true)};

// Overlapped stage k: the collective is posted and starts at `post`, the compute runs
// [post, comp_end], the job finishes at `fin`, the wait returns at max(comp_end, fin).
struct Stage {
  double post, comp_end, fin;
};

FbPairTrace overlapped_pair(int rank, const Stage (&st)[4]) {
  FbPairTrace t;
  t.rank = rank;
  t.overlapped = true;
  t.begin = st[0].post;
  for (int k = 0; k < 4; ++k) {
    const SubStep comp = k % 2 == 0 ? kF[k] : kB[k];
    const SubStep coll = k % 2 == 0 ? kB[k] : kF[k];
    const double end = std::max(st[k].comp_end, st[k].fin);
    t.events.push_back({comp, false, st[k].post, st[k].comp_end});
    t.events.push_back({coll, true, st[k].post, end});
    t.collectives.push_back({coll, CommJobTimes{st[k].post, st[k].post, st[k].fin}});
    t.end = end;
  }
  return t;
}

// Serial: eight [start, end] intervals in the order F0..F3, B0..B3; collectives start their
// job at their start and finish at their end.
FbPairTrace serial_pair(int rank, const double (&iv)[8][2]) {
  FbPairTrace t;
  t.rank = rank;
  t.begin = iv[0][0];
  t.end = iv[7][1];
  for (int i = 0; i < 8; ++i) {
    const SubStep s = i < 4 ? kF[i] : kB[i - 4];
    const bool coll = is_collective(s);
    t.events.push_back({s, coll, iv[i][0], iv[i][1]});
    if (coll) t.collectives.push_back({s, CommJobTimes{iv[i][0], iv[i][0], iv[i][1]}});
  }
  return t;
}

std::vector<FbPairTrace> two_rank_traces() {
  // Overlapped. Rank 1's stage-1 compute ends at 11, so it joins collective 2 at 11, four
  // seconds after rank 0 (which joined at 7 and computed until 10).
  const Stage r0[4] = {{0, 3, 2}, {3, 7, 5}, {7, 10, 12}, {12, 14, 15}};
  const Stage r1[4] = {{0, 3, 2}, {3, 11, 5}, {11, 12, 12}, {12, 14, 15}};
  // Serial. Rank 1's first compute lasts 4 s, rank 0's 2 s: rank 0 waits 2 s in DISPATCH.F.
  const double s0[8][2] = {{20, 22}, {22, 25}, {25, 27}, {27, 28}, {28, 29}, {29, 31}, {31, 32}, {32, 34}};
  const double s1[8][2] = {{20, 24}, {24, 25}, {25, 27}, {27, 28}, {28, 29}, {29, 31}, {31, 32}, {32, 34}};
  return {serial_pair(0, s0), serial_pair(1, s1), overlapped_pair(0, r0), overlapped_pair(1, r1)};
}

TEST(FbOverlapReportTest, SplitsHandMadeTimelinesAsWorkedOutByHand) {
  std::vector<FbRankPhases> tot;
  FbGroupPhases group;
  const std::string text = fb_phase_report(two_rank_traces(), &tot, &group);
  // Group, with zero-time collectives: stage starts (rank 0, rank 1) 0,0 -> 3,3 -> 7,11 ->
  // 11,12 (rank 0 waits for rank 1's post of collective 2 at 11) -> ends 13,14: bound 14.
  // Both pairs took 15 (rank 0's stage-3 collective finished at 15): 1 s exposed.
  EXPECT_DOUBLE_EQ(group.overlapped_s, 15);
  EXPECT_DOUBLE_EQ(group.compute_bound_s, 14);
  EXPECT_DOUBLE_EQ(group.exposed_s, 1);
  ASSERT_EQ(tot.size(), 2u);
  const FbRankPhases& a = tot[0];
  const FbRankPhases& b = tot[1];
  // Serial: rank 0 computes 2+2+2+2, communicates 3+1+1+1 of which 2 waiting for rank 1
  // (it joined DISPATCH.F at 24) and 1+1+1+1 of transfer; rank 1 computes 4+2+2+2 and
  // communicates 1+1+1+1, all transfer.
  EXPECT_DOUBLE_EQ(a.serial_s, 14);
  EXPECT_DOUBLE_EQ(a.serial_compute_s, 8);
  EXPECT_DOUBLE_EQ(a.serial_comm_s, 6);
  EXPECT_DOUBLE_EQ(a.serial_peers_s, 2);
  EXPECT_DOUBLE_EQ(a.serial_xfer_s, 4);
  EXPECT_DOUBLE_EQ(b.serial_compute_s, 10);
  EXPECT_DOUBLE_EQ(b.serial_comm_s, 4);
  EXPECT_DOUBLE_EQ(b.serial_peers_s, 0);
  EXPECT_DOUBLE_EQ(b.serial_xfer_s, 4);
  // Overlapped: rank 0 computes 3+4+3+2 and waits after its compute 12-10 in stage 2 and
  // 15-14 in stage 3; of stage 2's wait, 11-10 = 1 s is rank 1 not yet there.
  EXPECT_DOUBLE_EQ(a.overlapped_s, 15);
  EXPECT_DOUBLE_EQ(a.overlapped_compute_s, 12);
  EXPECT_DOUBLE_EQ(a.exposed_s, 3);
  EXPECT_DOUBLE_EQ(a.exposed_peers_s, 1);
  // Rank 1 computes 3+8+1+2, waits 15-14 in stage 3, never for a peer.
  EXPECT_DOUBLE_EQ(b.overlapped_compute_s, 14);
  EXPECT_DOUBLE_EQ(b.exposed_s, 1);
  EXPECT_DOUBLE_EQ(b.exposed_peers_s, 0);
  // The stage table names each pair of sub-steps; rank 0's stage 2 row: skew 0, post 0,
  // compute 3, lag 0, peers 4, xfer 1, wake 0, exposed 2, stage 5 (ms columns = s * 1000).
  EXPECT_NE(text.find("2 DISPATCH.B || EXPERTS.F"), std::string::npos) << text;
  EXPECT_NE(text.find("0 4000.000 1000.000"), std::string::npos) << text;
}

TEST(FbOverlapReportTest, RefusesARepWithoutEveryRank) {
  auto traces = two_rank_traces();
  traces.pop_back();  // rank 1's overlapped pair
  EXPECT_THROW(fb_phase_report(traces), InvalidArgument);
  auto cut = two_rank_traces();
  cut[0].events.pop_back();
  EXPECT_THROW(fb_phase_report(cut), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::pipeline
