// sy-info: what this Switchyard build is and which knobs it has.
//
//   sy-info             version, whether the CUDA backend was built, visible GPUs
//   sy-info --config    every registered knob (SWITCHYARD_<NAME>): type, default, units,
//                       current value (after the environment) and help
// Add --json for one JSON document. A malformed knob value in the environment is reported
// on stderr with exit status 1.
#include <gflags/gflags.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "switchyard/common/cuda.h"
#include "switchyard/common/param.h"

DEFINE_bool(config, false, "list every registered knob with type, default, units, current value and help");
DEFINE_bool(json, false, "print JSON instead of text");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("prints the Switchyard version, CUDA build status and knobs");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  try {
    nlohmann::json j;
    j["version"] = SY_VERSION;
    j["cuda_built"] = switchyard::cuda::built();
    j["cuda_devices"] = switchyard::cuda::device_count();
    if (FLAGS_config) {
      j["knobs"] = nlohmann::json::array();
      for (const auto& p : switchyard::param_registry())
        j["knobs"].push_back({{"name", p.name},
                              {"env", "SWITCHYARD_" + p.name},
                              {"type", p.type},
                              {"default", p.default_value},
                              {"units", p.units},
                              {"current", p.current()},
                              {"help", p.help}});
    }
    if (FLAGS_json) {
      std::cout << j.dump() << "\n";
      return 0;
    }
    std::cout << "switchyard " << SY_VERSION << "\n"
              << "cuda: " << (switchyard::cuda::built() ? "built" : "not built") << ", "
              << switchyard::cuda::device_count() << " device(s) visible\n";
    if (FLAGS_config) {
      std::cout << j["knobs"].size() << " knobs (set with the environment variable shown):\n";
      for (const auto& k : j["knobs"]) {
        std::cout << "  " << k["env"].get<std::string>() << " = " << k["current"].get<std::string>() << "\n"
                  << "      " << k["type"].get<std::string>() << ", default " << k["default"].get<std::string>();
        if (!k["units"].get<std::string>().empty()) std::cout << " " << k["units"].get<std::string>();
        std::cout << "\n      " << k["help"].get<std::string>() << "\n";
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "sy-info: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
