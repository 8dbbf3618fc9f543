// Work: handle of an asynchronous operation (see work.h).
#include "switchyard/comm/work.h"

#include "core/context.h"
#include "core/work_state.h"

namespace switchyard::comm {

bool Work::test() const {
  if (!state_) return true;
  if (!state_->finished()) return false;  // pure check: the progress thread moves the op
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
