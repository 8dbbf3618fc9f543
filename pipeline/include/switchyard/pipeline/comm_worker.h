// CommWorker: one long-lived thread that runs posted communication jobs (blocking
// collectives such as dispatch::Buffer::dispatch) in posting order, optionally pinned to a
// CPU, so that an overlapped F&B pair can drive its dispatch/combine off the compute thread.
//
// Why not std::async: a new thread per collective costs a creation and inherits the
// creator's CPU affinity (the compute core), so it cannot be kept off the compute core; a
// pinned worker can. Wake-up latency is bounded: after each job the worker polls its queue
// for `idle_poll` before it sleeps on a condition variable, and a waiter polls the job's
// completion for `idle_poll` before it sleeps (both poll with sched_yield, so a poller gives
// its core to a runnable compute thread at once instead of spinning against it).
//
// Threading: post() and the returned waits may be called from any thread; each wait must be
// called exactly once (it rethrows the job's exception). The destructor runs the queued jobs
// to completion, then joins. pin_current_thread() is a helper for the compute side.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace switchyard::pipeline {

// When a job ran (CLOCK_MONOTONIC seconds, monotonic_seconds()): posted by post(), started and
// finished on the worker thread. Valid once the job's wait has returned.
struct CommJobTimes {
  double posted = 0, started = 0, finished = 0;
};

class CommWorker {
 public:
  // cpu < 0: no pinning. Throws InvalidArgument if the CPU cannot be used.
  explicit CommWorker(int cpu = -1, std::chrono::microseconds idle_poll = std::chrono::microseconds(50));
  ~CommWorker();
  CommWorker(const CommWorker&) = delete;
  CommWorker& operator=(const CommWorker&) = delete;

  // Queues job; returns the wait, which blocks until the job ran and rethrows its error.
  std::function<void()> post(std::function<void()> job);
  // The same, and records when the job was posted, started and finished into *times (which
  // must stay valid until the wait returned; nullptr records nothing).
  std::function<void()> post(std::function<void()> job, CommJobTimes* times);

  int cpu() const { return cpu_; }

 private:
  struct Job;
  void loop();

  int cpu_;
  std::chrono::microseconds idle_poll_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// Pins the calling thread to one CPU; cpu < 0 does nothing. Threads created afterwards by
// this thread inherit the pin. Throws InvalidArgument naming the CPU if it cannot be used.
void pin_current_thread(int cpu);

}  // namespace switchyard::pipeline
