// One registry of knobs (NCCL's DEFINE_NCCL_PARAM, UCX's config tables).
//
// A knob is declared once, at namespace scope in the .cc that uses it:
//   static const switchyard::Param<int64_t> kSpinIters("COMM_SPIN_ITERS", 2000, "iterations",
//                                                      "busy-wait iterations before a waiter yields");
// and read with kSpinIters.get(). The environment variable is SWITCHYARD_<NAME>; a value
// set there is logged once under the "env" subsystem; a malformed value is an InvalidArgument
// naming the variable. `sy-info --config` lists every registered knob with its default,
// units, current value and help. gflags stay in tools; libraries use only this.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace switchyard {

struct ParamInfo {
  std::string name;           // without the SWITCHYARD_ prefix
  std::string type;           // int, float, bool, string
  std::string default_value;  // as text
  std::string units;
  std::string help;
  std::function<std::string()> current;  // current value as text
};

// All knobs declared in the libraries loaded into this process, sorted by name.
std::vector<ParamInfo> param_registry();

namespace detail {
void register_param(ParamInfo info);
std::optional<std::string> param_env(const std::string& name);  // logs an override once
int64_t parse_int(const std::string& var, const std::string& text);
double parse_float(const std::string& var, const std::string& text);
bool parse_bool(const std::string& var, const std::string& text);
std::string to_text(int64_t v);
std::string to_text(double v);
std::string to_text(bool v);
inline std::string to_text(const std::string& v) { return v; }
inline int64_t parse(const std::string& var, const std::string& t, int64_t*) { return parse_int(var, t); }
inline double parse(const std::string& var, const std::string& t, double*) { return parse_float(var, t); }
inline bool parse(const std::string& var, const std::string& t, bool*) { return parse_bool(var, t); }
inline std::string parse(const std::string&, const std::string& t, std::string*) { return t; }
template <class T> const char* type_name();
template <> inline const char* type_name<int64_t>() { return "int"; }
template <> inline const char* type_name<double>() { return "float"; }
template <> inline const char* type_name<bool>() { return "bool"; }
template <> inline const char* type_name<std::string>() { return "string"; }
}  // namespace detail

template <class T>
class Param {
 public:
  Param(const char* name, T default_value, const char* units, const char* help)
      : name_(name), default_(std::move(default_value)) {
    detail::register_param({name_, detail::type_name<T>(), detail::to_text(default_), units, help,
                            [this] { return detail::to_text(get()); }});
  }
  // Value from SWITCHYARD_<NAME>, else the default; read once and cached.
  T get() const {
    std::call_once(once_, [this] {
      auto env = detail::param_env(name_);
      T* tag = nullptr;
      value_ = env ? detail::parse("SWITCHYARD_" + name_, *env, tag) : default_;
    });
    return value_;
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  T default_;
  mutable std::once_flag once_;
  mutable T value_{};
};

}  // namespace switchyard
