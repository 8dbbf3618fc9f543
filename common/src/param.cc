// Knob registry: declared Params register here at static-initialisation time.
#include "switchyard/common/param.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard {
namespace {

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<ParamInfo>& registry() {
  static std::vector<ParamInfo> r;
  return r;
}

}  // namespace

std::vector<ParamInfo> param_registry() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto out = registry();
  std::sort(out.begin(), out.end(), [](const ParamInfo& a, const ParamInfo& b) { return a.name < b.name; });
  return out;
}

namespace detail {

void register_param(ParamInfo info) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (const auto& p : registry())
    if (p.name == info.name) throw InternalError("knob SWITCHYARD_" + info.name + " declared twice");
  registry().push_back(std::move(info));
}

std::optional<std::string> param_env(const std::string& name) {
  std::string var = "SWITCHYARD_" + name;
  const char* v = std::getenv(var.c_str());
  if (!v) return std::nullopt;
  SY_INFO("env", var << " set by environment to " << v);
  return std::string(v);
}

int64_t parse_int(const std::string& var, const std::string& text) {
  // Accepts plain integers and binary size suffixes (k, m, g: 1024-based), e.g. "8k".
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 0);
  if (end == text.c_str() || errno != 0) SY_THROW(InvalidArgument, var << "=" << text << " is not an integer");
  std::string suffix(end);
  int64_t mul = 1;
  if (suffix == "k" || suffix == "K" || suffix == "kb") mul = 1 << 10;
  else if (suffix == "m" || suffix == "M" || suffix == "mb") mul = 1 << 20;
  else if (suffix == "g" || suffix == "G" || suffix == "gb") mul = int64_t(1) << 30;
  else if (!suffix.empty()) SY_THROW(InvalidArgument, var << "=" << text << " has an unknown suffix '" << suffix << "'");
  return v * mul;
}

double parse_float(const std::string& var, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0') SY_THROW(InvalidArgument, var << "=" << text << " is not a number");
  return v;
}

bool parse_bool(const std::string& var, const std::string& text) {
  static const std::set<std::string> yes{"1", "y", "yes", "true", "on"}, no{"0", "n", "no", "false", "off"};
  if (yes.count(text)) return true;
  if (no.count(text)) return false;
  SY_THROW(InvalidArgument, var << "=" << text << " is not a boolean (use 1/0, yes/no, true/false, on/off)");
}

std::string to_text(int64_t v) { return std::to_string(v); }
std::string to_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
std::string to_text(bool v) { return v ? "true" : "false"; }

}  // namespace detail
}  // namespace switchyard
