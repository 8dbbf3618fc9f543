// PhaseTimer: per-call phase times of dispatch/combine, logged at trace level (private).
//
//   SWITCHYARD_LOG_LEVEL=trace SWITCHYARD_LOG_SUBSYS=dispatch sy-run ... sy-dispatch-perf
// prints one line per call and rank, e.g.
//   "combine two-hop: partial 12.1 ms, exchange B 3.0 ms, reduce B 4.2 ms, ..."
// When trace logging is off, lap() and add() do nothing but test one bool.
// Threading: one object per call, used by one thread.
#pragma once

#include <chrono>
#include <iomanip>
#include <sstream>
#include <string>
#include <string_view>

#include "switchyard/common/log.h"

namespace switchyard::dispatch::detail {

class PhaseTimer {
 public:
  explicit PhaseTimer(const char* what)
      : on_(log::enabled(log::Level::kTrace, "dispatch")), what_(what), last_(Clock::now()) {}
  bool on() const { return on_; }
  // Ends the phase that started at the previous lap (or construction).
  void lap(std::string_view phase) {
    if (!on_) return;
    const auto now = Clock::now();
    add(phase, std::chrono::duration<double, std::milli>(now - last_).count());
    last_ = now;
  }
  // Records a phase measured by the caller (ms).
  void add(std::string_view phase, double ms) {
    if (!on_) return;
    text_ << (text_.tellp() > 0 ? ", " : "") << phase << " " << std::fixed << std::setprecision(3) << ms << " ms";
  }
  ~PhaseTimer() {
    if (on_) SY_LOG(kTrace, "dispatch", what_ << ": " << text_.str());
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  using Clock = std::chrono::steady_clock;
  bool on_;
  std::string what_;
  Clock::time_point last_;
  std::ostringstream text_;
};

}  // namespace switchyard::dispatch::detail
