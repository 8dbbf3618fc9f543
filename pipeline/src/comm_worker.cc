// CommWorker (comm_worker.h): a pinned thread that runs communication jobs in order.
#include "switchyard/pipeline/comm_worker.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <exception>
#include <memory>

#include "switchyard/common/error.h"
#include "switchyard/pipeline/overlap.h"

namespace switchyard::pipeline {

namespace {

void pin_thread(pthread_t thread, int cpu) {
  if (cpu < 0) return;
  SY_REQUIRE(cpu < CPU_SETSIZE, "pin: CPU " << cpu << " is out of range");
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const int rc = pthread_setaffinity_np(thread, sizeof(set), &set);
  SY_REQUIRE(rc == 0, "pin: cannot pin a thread to CPU " << cpu << " (pthread_setaffinity_np error " << rc
                                                        << "; is the CPU online and in this process's mask?)");
}

}  // namespace

void pin_current_thread(int cpu) { pin_thread(pthread_self(), cpu); }

// Completion of one job, shared by the worker and the wait.
struct CommWorker::Job {
  std::atomic<bool> done{false};
  std::exception_ptr error;
  std::mutex mu;
  std::condition_variable cv;
};

CommWorker::CommWorker(int cpu, std::chrono::microseconds idle_poll) : cpu_(cpu), idle_poll_(idle_poll) {
  thread_ = std::thread([this] { loop(); });
  try {
    pin_thread(thread_.native_handle(), cpu);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    throw;
  }
}

CommWorker::~CommWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::function<void()> CommWorker::post(std::function<void()> job) { return post(std::move(job), nullptr); }

std::function<void()> CommWorker::post(std::function<void()> job, CommJobTimes* times) {
  auto state = std::make_shared<Job>();
  if (times) *times = CommJobTimes{monotonic_seconds(), 0, 0};
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back([state, times, job = std::move(job)] {
      if (times) times->started = monotonic_seconds();
      try {
        job();
      } catch (...) {
        state->error = std::current_exception();
      }
      if (times) times->finished = monotonic_seconds();
      {
        std::lock_guard<std::mutex> l(state->mu);
        state->done.store(true, std::memory_order_release);
      }
      state->cv.notify_one();
    });
  }
  cv_.notify_one();
  const auto poll = idle_poll_;
  return [state, poll] {
    const auto until = std::chrono::steady_clock::now() + poll;
    while (!state->done.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until) sched_yield();
    if (!state->done.load(std::memory_order_acquire)) {
      std::unique_lock<std::mutex> l(state->mu);
      state->cv.wait(l, [&] { return state->done.load(std::memory_order_acquire); });
    }
    if (state->error) std::rethrow_exception(state->error);
  };
}

void CommWorker::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (queue_.empty()) {
      // Poll briefly (a pair posts its next collective within microseconds), then sleep.
      lock.unlock();
      const auto until = std::chrono::steady_clock::now() + idle_poll_;
      while (std::chrono::steady_clock::now() < until) {
        sched_yield();
        std::lock_guard<std::mutex> peek(mu_);
        if (!queue_.empty() || stop_) break;
      }
      lock.lock();
      cv_.wait(lock, [&] { return !queue_.empty() || stop_; });
    }
    if (queue_.empty() && stop_) return;
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

}  // namespace switchyard::pipeline
