// FbOverlap in one process, with stand-in collectives: the order the collectives reach the
// worker (B1, F1, B2, F2, ... then the longer lane's rest), one lane computing at a time,
// the other lane computing while a collective runs, and error propagation.
#include "switchyard/trainer/dist/fb_overlap.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "switchyard/common/error.h"

namespace switchyard::trainer::dist {
namespace {

using pipeline::SubStepKind;

struct Recorder {
  std::mutex mu;
  std::vector<std::string> collectives;  // in the order they ran
  std::atomic<int> computing{0};
  std::atomic<int> max_computing{0};
  std::atomic<int> computed_during_collective{0};
  std::atomic<bool> in_collective{false};

  void compute() {
    const int now = ++computing;
    int seen = max_computing.load();
    while (now > seen && !max_computing.compare_exchange_weak(seen, now)) {
    }
    if (in_collective.load()) ++computed_during_collective;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (in_collective.load()) ++computed_during_collective;
    --computing;
  }
  void collective(const std::string& name) {
    in_collective = true;
    {
      std::lock_guard<std::mutex> lock(mu);
      collectives.push_back(name);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    in_collective = false;
  }
};

// A lane: compute, then n times (collective, compute).
std::function<void()> lane(Recorder& r, const std::string& name, int n, bool backward, int throw_after = -1) {
  return [&r, name, n, backward, throw_after] {
    EXPECT_NE(current_fb_lane(), nullptr);
    r.compute();
    for (int k = 0; k < n; ++k) {
      if (k == throw_after) throw std::runtime_error(name + " failed");
      current_fb_lane()->collective(k % 2 ? SubStepKind::kCombine : SubStepKind::kDispatch, backward, k,
                                    [&r, &name, k] { r.collective(name + std::to_string(k)); });
      r.compute();
    }
  };
}

TEST(FbOverlapTest, CollectivesAlternateStartingWithTheBackwardAndComputeIsExclusive) {
  Recorder r;
  FbOverlap overlap(nullptr);
  EXPECT_EQ(current_fb_lane(), nullptr);
  overlap.run_pair(0, 1, lane(r, "F", 4, false), 1, 0, lane(r, "B", 2, true));
  EXPECT_EQ(current_fb_lane(), nullptr);
  const std::vector<std::string> expected = {"B0", "F0", "B1", "F1", "F2", "F3"};
  EXPECT_EQ(r.collectives, expected);
  EXPECT_EQ(r.max_computing.load(), 1) << "two lanes computed at once";
  EXPECT_GT(r.computed_during_collective.load(), 0) << "no lane computed while a collective ran";
  EXPECT_EQ(overlap.pairs_run(), 1);
  EXPECT_EQ(overlap.collectives_run(), 6);
  // Sub-step events: one compute stretch per lane per collective plus each lane's last one,
  // and one collective event each, with the lane's stage and micro-batch.
  int compute = 0, coll = 0;
  for (const auto& e : overlap.sub_steps()) {
    (e.collective ? coll : compute)++;
    EXPECT_LE(e.start, e.end);
    EXPECT_EQ(e.step.microbatch, e.step.backward ? 0 : 1);
    EXPECT_EQ(e.step.stage, e.step.backward ? 1 : 0);
  }
  EXPECT_EQ(coll, 6);
  EXPECT_EQ(compute, 6 + 2);
}

TEST(FbOverlapTest, ALaneWithoutCollectivesRunsAndTheOtherContinuesAlone) {
  Recorder r;
  FbOverlap overlap(nullptr);
  overlap.run_pair(0, 2, lane(r, "F", 0, false), 0, 3, lane(r, "B", 3, true));
  const std::vector<std::string> expected = {"B0", "B1", "B2"};
  EXPECT_EQ(r.collectives, expected);
  EXPECT_EQ(r.max_computing.load(), 1);
}

TEST(FbOverlapTest, AnErrorInOneLaneIsRethrownAfterTheOtherLaneFinished) {
  Recorder r;
  FbOverlap overlap(nullptr);
  try {
    overlap.run_pair(0, 1, lane(r, "F", 3, false, /*throw_after=*/1), 1, 0, lane(r, "B", 3, true));
    ADD_FAILURE() << "the forward lane's error was not rethrown";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "F failed");
  }
  // The backward lane ran all its collectives; the forward lane stopped after its first.
  const std::vector<std::string> expected = {"B0", "F0", "B1", "B2"};
  EXPECT_EQ(r.collectives, expected);
  // The runner is usable afterwards.
  Recorder again;
  overlap.run_pair(0, 1, lane(again, "F", 1, false), 1, 0, lane(again, "B", 1, true));
  EXPECT_EQ(again.collectives, (std::vector<std::string>{"B0", "F0"}));
}

TEST(FbOverlapTest, RejectsAPairOfOneMicroBatch) {
  FbOverlap overlap(nullptr);
  EXPECT_THROW(overlap.run_pair(0, 2, [] {}, 1, 2, [] {}), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::trainer::dist
