// run_overlapped_pair and run_serial on fake sub-steps: the collectives are asynchronous
// tasks on another thread, the compute sub-steps record when they ran. Checks the issue order,
// that every collective was in flight while the other micro-batch's compute ran, and that
// lists that do not alternate are refused.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/overlap.h"

namespace switchyard::pipeline {
namespace {

SubStep step(SubStepKind k, bool backward, int mb) {
  SubStep s;
  s.kind = k;
  s.backward = backward;
  s.microbatch = mb;
  return s;
}

// A layer's forward (mb 1) and backward (mb 0) with a log of what started and finished.
// A posted collective "arrives" only once one more compute sub-step has run (or after
// `patience`),
// so the log order shows deterministically whether compute ran while it was in flight.
struct Fake {
  std::vector<std::string> log;
  std::mutex mu;
  std::condition_variable cv;
  int computes = 0;
  std::chrono::milliseconds patience{2000};  // longest wait for the overlapping compute
  void note(const std::string& s) {
    std::lock_guard<std::mutex> g(mu);
    log.push_back(s);
  }
  SubStepTask compute(SubStepKind k, bool bwd, int mb, const std::string& name) {
    SubStepTask t;
    t.step = step(k, bwd, mb);
    t.run = [this, name]() {
      std::lock_guard<std::mutex> g(mu);
      log.push_back(name);
      ++computes;
      cv.notify_all();
    };
    return t;
  }
  SubStepTask collective(SubStepKind k, bool bwd, int mb, const std::string& name) {
    SubStepTask t;
    t.step = step(k, bwd, mb);
    t.start = [this, name]() -> std::function<void()> {
      int target = 0;
      {
        std::lock_guard<std::mutex> g(mu);
        log.push_back(name + " posted");
        target = computes + 1;
      }
      auto f = std::make_shared<std::future<void>>(std::async(std::launch::async, [this, name, target]() {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait_for(lk, patience, [&] { return computes >= target; });
        log.push_back(name + " arrived");
      }));
      return [f]() { f->get(); };
    };
    return t;
  }
  std::vector<SubStepTask> forward() {
    return {compute(SubStepKind::kAttention, false, 1, "ATTN.F"), collective(SubStepKind::kDispatch, false, 1, "DISPATCH.F"),
            compute(SubStepKind::kExperts, false, 1, "EXPERTS.F"), collective(SubStepKind::kCombine, false, 1, "COMBINE.F")};
  }
  std::vector<SubStepTask> backward() {
    return {collective(SubStepKind::kCombine, true, 0, "COMBINE.B"), compute(SubStepKind::kExperts, true, 0, "EXPERTS.B"),
            collective(SubStepKind::kDispatch, true, 0, "DISPATCH.B"), compute(SubStepKind::kAttention, true, 0, "ATTN.B")};
  }
};

TEST(OverlapTest, PairRunsEachCollectiveDuringTheOtherMicrobatchsCompute) {
  Fake fake;
  auto f = fake.forward();
  auto b = fake.backward();
  std::vector<SubStepEvent> ev;
  run_overlapped_pair(f, b, &ev);
  // The figure-4 order: collective posted, the other side's compute, then the arrival.
  const std::vector<std::string> want = {"COMBINE.B posted",  "ATTN.F",     "COMBINE.B arrived", "DISPATCH.F posted",
                                         "EXPERTS.B",         "DISPATCH.F arrived", "DISPATCH.B posted", "EXPERTS.F",
                                         "DISPATCH.B arrived", "COMBINE.F posted",  "ATTN.B",    "COMBINE.F arrived"};
  EXPECT_EQ(fake.log, want);
  ASSERT_EQ(ev.size(), 8u);
  for (size_t i = 0; i < ev.size(); i += 2) {
    const SubStepEvent& comp = ev[i];
    const SubStepEvent& coll = ev[i + 1];
    EXPECT_FALSE(comp.collective);
    EXPECT_TRUE(coll.collective);
    EXPECT_NE(comp.step.microbatch, coll.step.microbatch);
    EXPECT_LE(coll.start, comp.start);
    EXPECT_GE(coll.end, comp.end);
  }
}

TEST(OverlapTest, SerialWaitsRightAfterEachCollective) {
  Fake fake;
  fake.patience = std::chrono::milliseconds(20);  // nothing overlaps here: do not wait long
  auto f = fake.forward();
  run_serial(f, nullptr);
  EXPECT_EQ(fake.log, (std::vector<std::string>{"ATTN.F", "DISPATCH.F posted", "DISPATCH.F arrived", "EXPERTS.F",
                                                "COMBINE.F posted", "COMBINE.F arrived"}));
}

TEST(OverlapTest, RefusesListsThatDoNotAlternate) {
  Fake fake;
  auto f = fake.forward();
  auto b = fake.forward();  // a forward list where a backward list is expected
  EXPECT_THROW(run_overlapped_pair(f, b, nullptr), InvalidArgument);
  auto shorter = fake.backward();
  shorter.pop_back();
  EXPECT_THROW(run_overlapped_pair(f, shorter, nullptr), InvalidArgument);
}

}  // namespace
}  // namespace switchyard::pipeline
