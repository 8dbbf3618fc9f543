// CommWorker: jobs run in posting order on the worker thread, errors reach the wait, pinning
// puts the worker (and only it) on the requested CPU, and a bad CPU is refused by name.
#include "switchyard/pipeline/comm_worker.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/overlap.h"

namespace switchyard::pipeline {
namespace {

TEST(CommWorkerTest, RunsJobsInPostingOrderOffTheCallingThread) {
  CommWorker worker;
  std::vector<int> order;
  std::vector<std::thread::id> ids;
  std::vector<std::function<void()>> waits;
  for (int i = 0; i < 20; ++i)
    waits.push_back(worker.post([&, i] {
      order.push_back(i);
      ids.push_back(std::this_thread::get_id());
    }));
  for (auto& w : waits) w();
  ASSERT_EQ(order.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
  for (auto id : ids) {
    EXPECT_EQ(id, ids[0]);  // one long-lived thread
    EXPECT_NE(id, std::this_thread::get_id());
  }
}

TEST(CommWorkerTest, RecordsWhenEachJobWasPostedStartedAndFinished) {
  CommWorker worker;
  CommJobTimes first, second;
  // The first job holds the worker for 20 ms, so the second starts only after it finished.
  const double before = monotonic_seconds();
  auto w1 = worker.post([] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }, &first);
  auto w2 = worker.post([] {}, &second);
  w1();
  w2();
  const double after = monotonic_seconds();
  EXPECT_LE(before, first.posted);
  EXPECT_LE(first.posted, first.started);
  EXPECT_GE(first.finished - first.started, 0.020);
  EXPECT_LE(second.posted, first.finished);  // posted while the first still ran
  EXPECT_GE(second.started, first.finished);
  EXPECT_LE(second.started, second.finished);
  EXPECT_LE(second.finished, after);
}

TEST(CommWorkerTest, WaitRethrowsTheJobsError) {
  CommWorker worker;
  auto bad = worker.post([] { throw std::runtime_error("peer went away"); });
  auto good = worker.post([] {});
  EXPECT_THROW(
      {
        try {
          bad();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "peer went away");
          throw;
        }
      },
      std::runtime_error);
  EXPECT_NO_THROW(good());  // the worker survives a failed job
}

TEST(CommWorkerTest, PinsTheWorkerToItsCpu) {
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  int last = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &mask)) last = c;
  ASSERT_GE(last, 0);
  CommWorker worker(last);
  int seen = -1;
  worker.post([&] { seen = sched_getcpu(); })();
  EXPECT_EQ(seen, last);
  cpu_set_t after;  // the calling thread keeps its mask
  ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&mask, &after));
}

TEST(CommWorkerTest, RefusesACpuThatDoesNotExist) {
  try {
    CommWorker worker(CPU_SETSIZE - 1);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("CPU " + std::to_string(CPU_SETSIZE - 1)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace switchyard::pipeline
