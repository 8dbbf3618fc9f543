// Training schedules: the learning rate (linear warm-up, then constant or cosine decay) and
// piecewise-constant values such as the MTP loss weight and the bias-update speed
// (DeepSeek-V3: lambda 0.3 -> 0.1, gamma 0.001 -> 0).
//
// Plain data; at() is a pure function of the step (0-based optimizer step). Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::trainer {

enum class LrDecay { kConstant, kCosine };

struct LrSchedule {
  double peak = 1e-3;
  int64_t warmup_steps = 0;  // lr = peak * (step + 1) / warmup_steps for step < warmup_steps
  LrDecay decay = LrDecay::kConstant;
  int64_t total_steps = 0;   // cosine: from peak at warmup_steps to min_lr at total_steps
  double min_lr = 0;

  double at(int64_t step) const;
};

// "constant" or "cosine"; throws InvalidArgument otherwise.
LrDecay parse_lr_decay(const std::string& text);

// Piecewise-constant value: "V0" or "V0,S1:V1,S2:V2" = V0 before step S1, V1 from S1, ...
class StepSchedule {
 public:
  StepSchedule() = default;
  explicit StepSchedule(double value) : initial_(value) {}
  // Throws InvalidArgument quoting the text when it does not parse or steps do not increase.
  static StepSchedule parse(const std::string& text);
  double at(int64_t step) const;
  std::string to_string() const;

 private:
  double initial_ = 0;
  std::vector<std::pair<int64_t, double>> changes_;  // (first step, value), increasing steps
};

}  // namespace switchyard::trainer
