// Work: handle of an asynchronous operation (see work.h).
#include "switchyard/comm/work.h"

#include "core/context.h"
#include "core/work_state.h"

namespace switchyard::comm {

namespace detail {
namespace {
thread_local bool t_blocking_call = false;
}
BlockingCall::BlockingCall() : previous_(t_blocking_call) { t_blocking_call = true; }
BlockingCall::~BlockingCall() { t_blocking_call = previous_; }
bool BlockingCall::active() { return t_blocking_call; }
}  // namespace detail

bool Work::test() const {
  if (!state_) return true;
  if (!state_->finished()) {
    state_->context()->poll();  // one progress pass if the context is free
    if (!state_->finished()) return false;
  }
  state_->rethrow_if_failed();
  return true;
}

void Work::wait() const {
  if (state_) wait(state_->timeout());
}

void Work::wait(std::chrono::milliseconds timeout) const {
  if (!state_) return;
  if (state_->finished()) {
    state_->rethrow_if_failed();
    return;
  }
  state_->context()->wait(*state_, timeout);
}

}  // namespace switchyard::comm
