// Learning-rate and step schedules (see schedule.h).
#include "switchyard/trainer/train/schedule.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "switchyard/common/error.h"

namespace switchyard::trainer {

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return peak * double(step + 1) / double(warmup_steps);
  if (decay == LrDecay::kConstant || total_steps <= warmup_steps) return peak;
  if (step >= total_steps) return min_lr;
  const double pi = std::acos(-1.0);
  double progress = double(step - warmup_steps) / double(total_steps - warmup_steps);
  return min_lr + 0.5 * (peak - min_lr) * (1.0 + std::cos(pi * progress));
}

LrDecay parse_lr_decay(const std::string& text) {
  if (text == "constant") return LrDecay::kConstant;
  if (text == "cosine") return LrDecay::kCosine;
  SY_THROW(InvalidArgument, "learning-rate decay \"" << text << "\" is not one of: constant, cosine");
}

namespace {

double parse_number(const std::string& text, const std::string& whole) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  SY_REQUIRE(!text.empty() && end && *end == '\0' && std::isfinite(v),
             "schedule \"" << whole << "\": \"" << text << "\" is not a number");
  return v;
}

}  // namespace

StepSchedule StepSchedule::parse(const std::string& text) {
  StepSchedule s;
  std::stringstream in(text);
  std::string item;
  bool first = true;
  while (std::getline(in, item, ',')) {
    if (first) {
      s.initial_ = parse_number(item, text);
      first = false;
      continue;
    }
    size_t colon = item.find(':');
    SY_REQUIRE(colon != std::string::npos, "schedule \"" << text << "\": \"" << item << "\" is not STEP:VALUE");
    double step = parse_number(item.substr(0, colon), text);
    SY_REQUIRE(step >= 0 && step == std::floor(step), "schedule \"" << text << "\": step " << step
                                                                    << " is not a non-negative integer");
    int64_t st = static_cast<int64_t>(step);
    SY_REQUIRE(s.changes_.empty() || st > s.changes_.back().first,
               "schedule \"" << text << "\": steps must increase");
    s.changes_.emplace_back(st, parse_number(item.substr(colon + 1), text));
  }
  SY_REQUIRE(!first, "schedule \"" << text << "\" is empty");
  return s;
}

double StepSchedule::at(int64_t step) const {
  double v = initial_;
  for (const auto& [first, value] : changes_)
    if (step >= first) v = value;
  return v;
}

std::string StepSchedule::to_string() const {
  std::ostringstream out;
  out << initial_;
  for (const auto& [first, value] : changes_) out << ',' << first << ':' << value;
  return out.str();
}

}  // namespace switchyard::trainer
