// WorkState: the shared completion record behind a Work handle.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "core/op.h"

namespace switchyard::comm::detail {

class Context;

class WorkState {
 public:
  WorkState(std::shared_ptr<Context> context, const OpName& name, std::chrono::milliseconds timeout)
      : context_(std::move(context)), name_(name), timeout_(timeout) {}

  bool finished() const { return finished_.load(std::memory_order_acquire); }
  // Called once by the Context (under its lock).
  void finish(std::exception_ptr error) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = error;
    }
    finished_.store(true, std::memory_order_release);
  }
  void rethrow_if_failed() const {
    std::exception_ptr e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      e = error_;
    }
    if (e) std::rethrow_exception(e);
  }
  const OpName& name() const { return name_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  Context* context() const { return context_.get(); }

 private:
  std::shared_ptr<Context> context_;
  OpName name_;
  std::chrono::milliseconds timeout_;
  std::atomic<bool> finished_{false};
  mutable std::mutex mu_;
  std::exception_ptr error_;
};

}  // namespace switchyard::comm::detail
