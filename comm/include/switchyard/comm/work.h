// Work: the handle of an asynchronous operation (isend, irecv, ia2a, iall_reduce, ...).
//
// Operations make progress on the communicator's progress thread, so a posted operation
// completes while the caller computes without calling the library. wait() blocks until the
// operation finished or the timeout passed (Timeout naming the ranks still owed data);
// errors of the operation (PeerFailure, ...) are rethrown by wait() and test().
// A Work may be waited on from any thread; copies share the same operation.
#pragma once

#include <chrono>
#include <memory>

namespace switchyard::comm {

namespace detail {
class WorkState;

// Marks the current thread while a blocking wrapper (send, all_reduce, ...) issues and
// waits for its op: that thread drives progress itself, so posting the op need not wake
// the progress thread (saves a futex wake-up per call). RAII, nests.
class BlockingCall {
 public:
  BlockingCall();
  ~BlockingCall();
  BlockingCall(const BlockingCall&) = delete;
  BlockingCall& operator=(const BlockingCall&) = delete;
  static bool active();

 private:
  bool previous_;
};
}  // namespace detail

class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<detail::WorkState> state) : state_(std::move(state)) {}
  // True once finished (rethrows its error). Never blocks: it makes at most one progress
  // pass, and only when no other thread holds the communicator's context (the progress
  // thread moves the op otherwise). A default-constructed Work is finished.
  bool test() const;
  // Waits with the communicator's default timeout.
  void wait() const;
  void wait(std::chrono::milliseconds timeout) const;
  bool valid() const { return state_ != nullptr; }

 private:
  std::shared_ptr<detail::WorkState> state_;
};

}  // namespace switchyard::comm
