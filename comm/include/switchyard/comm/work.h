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
}

class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<detail::WorkState> state) : state_(std::move(state)) {}
  // True once finished (rethrows its error); a pure check that never drives progress.
  // A default-constructed Work is finished.
  bool test() const;
  // Waits with the communicator's default timeout.
  void wait() const;
  void wait(std::chrono::milliseconds timeout) const;
  bool valid() const { return state_ != nullptr; }

 private:
  std::shared_ptr<detail::WorkState> state_;
};

}  // namespace switchyard::comm
