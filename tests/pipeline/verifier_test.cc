// The verifier accepts correct schedules and rejects broken ones with a message that names
// the problem: a dropped receive, swapped EP collectives, a W before its B, sends and receives
// in different orders, and a compute order whose reference-style P2P batches deadlock.
#include <gtest/gtest.h>

#include <algorithm>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/generators.h"
#include "switchyard/pipeline/schedule_format.h"
#include "switchyard/pipeline/verifier.h"

namespace switchyard::pipeline {
namespace {

std::string failure(const Schedule& s) {
  try {
    verify(s);
  } catch (const InvalidArgument& e) {
    return e.message();
  }
  return "accepted";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const char* kTwoStage =
    "schedule hand stages 2 microbatches 2 replicas 1 ranks 2\n"
    "path 0 0 1\nmbpath 0 0\n"
    "rank 0\n  F s0 m0\n  F s0 m1\n  SEND_ACT s0 m0 r1\n  SEND_ACT s0 m1 r1\n"
    "  RECV_GRAD s1 m0 r1\n  RECV_GRAD s1 m1 r1\n  BW s0 m0\n  BW s0 m1\n"
    "rank 1\n  RECV_ACT s0 m0 r0\n  RECV_ACT s0 m1 r0\n  F s1 m0\n  BW s1 m0\n  F s1 m1\n  BW s1 m1\n"
    "  SEND_GRAD s1 m0 r0\n  SEND_GRAD s1 m1 r0\n";

TEST(VerifierTest, AcceptsHandWrittenScheduleAndCountsActivations) {
  VerifyReport rep = verify(parse_text(kTwoStage));
  EXPECT_EQ(rep.num_transfers, 4);
  EXPECT_EQ(rep.peak_activations, (std::vector<int>{2, 1}));
}

TEST(VerifierTest, RejectsSendsAndReceivesInDifferentOrder) {
  std::string text = kTwoStage;
  text.replace(text.find("SEND_ACT s0 m0 r1\n  SEND_ACT s0 m1 r1"), 37, "SEND_ACT s0 m1 r1\n  SEND_ACT s0 m0 r1");
  EXPECT_TRUE(contains(failure(parse_text(text)), "do not match in order")) << failure(parse_text(text));
}

TEST(VerifierTest, RejectsDroppedReceive) {
  Schedule s = generate(ScheduleKind::k1F1B, {4, 8});
  auto& list = s.ranks[2];
  auto it = std::find_if(list.begin(), list.end(), [](const Action& a) { return a.kind == OpKind::kRecvActivation; });
  ASSERT_NE(it, list.end());
  list.erase(it);
  const std::string msg = failure(s);
  EXPECT_TRUE(contains(msg, "rank 2")) << msg;
  EXPECT_TRUE(contains(msg, "never receives")) << msg;
}

TEST(VerifierTest, RejectsWeightBeforeItsBackward) {
  Schedule s = generate(ScheduleKind::kZBH1, {4, 8});
  auto& list = s.ranks[1];
  auto b = std::find_if(list.begin(), list.end(), [](const Action& a) { return a.kind == OpKind::kBackwardInput; });
  auto w = std::find_if(list.begin(), list.end(), [&](const Action& a) {
    return a.kind == OpKind::kBackwardWeight && a.stage == b->stage && a.microbatch == b->microbatch;
  });
  ASSERT_TRUE(b != list.end() && w != list.end());
  Action moved = *w;
  list.erase(w);
  list.insert(b, moved);
  const std::string msg = failure(s);
  EXPECT_TRUE(contains(msg, "comes before its B")) << msg;
}

TEST(VerifierTest, RejectsSwappedEpCollectives) {
  Schedule s = replicate(generate(ScheduleKind::kDualPipeV, {2, 4}), 2);
  add_moe_sub_steps(s, 1);
  ASSERT_NO_THROW(verify(s));
  // Rank 2 (replica 1 of pipeline rank 0) issues combine before dispatch in its first F.
  auto& subs = s.ranks[2][0].sub_steps;
  ASSERT_EQ(subs.size(), 4u);
  std::swap(subs[1], subs[3]);
  const std::string msg = failure(s);
  EXPECT_TRUE(contains(msg, "EP group")) << msg;
  EXPECT_TRUE(contains(msg, "same order")) << msg;
}

TEST(VerifierTest, DetectsRendezvousDeadlockOfReferenceStyleBatches) {
  // Interleaved 1F1B with one batch before each chunk: every rank sends a gradient to a
  // neighbour that is itself blocked sending, a cycle under zero-buffer semantics.
  Schedule s = generate(ScheduleKind::kInterleaved1F1B, {4, 8});
  for (auto& list : s.ranks)
    list.erase(std::remove_if(list.begin(), list.end(), [](const Action& a) { return is_p2p(a.kind); }), list.end());
  Schedule rounds = s;
  add_p2p(s, P2PPlacement::kBeforeChunk);
  const std::string msg = failure(s);
  EXPECT_TRUE(contains(msg, "deadlocks")) << msg;
  EXPECT_TRUE(contains(msg, "waits at action")) << msg;
  add_p2p(rounds, P2PPlacement::kRounds);
  EXPECT_NO_THROW(verify(rounds));
}

TEST(VerifierTest, RejectsIncompleteSchedules) {
  Schedule s = generate(ScheduleKind::k1F1B, {2, 2});
  auto& list = s.ranks[1];
  list.erase(std::find_if(list.begin(), list.end(), [](const Action& a) { return a.kind == OpKind::kBackward; }));
  const std::string msg = failure(s);
  EXPECT_TRUE(contains(msg, "expected one BW or one B and one W")) << msg;
}

TEST(VerifierTest, RejectsChunkOnWrongRank) {
  Schedule s = generate(ScheduleKind::k1F1B, {2, 2});
  s.ranks[0].push_back(make_compute(OpKind::kForward, 1, 0));
  EXPECT_TRUE(contains(failure(s), "on rank 1, not here")) << failure(s);
}

}  // namespace
}  // namespace switchyard::pipeline
