// sy-run: starts the ranks of a Switchyard job on this host and supervises them.
//
//   sy-run -n N [--nodes M | --rank-map FILE] [--timeout S] [--grace S] [--tag-output] -- PROGRAM ARGS...
//   sy-run -n N --nnodes H --node-rank I --master ADDR:PORT [--token T] -- PROGRAM ARGS...
//
// Flags are gflags definitions, but sy-run parses the command line itself so that an
// unknown flag or a bad value is a usage error (exit 2, one clear line) and everything
// after "--" belongs to the program untouched. Usage, environment protocol, exit codes
// and failure behaviour: docs/launcher.md.
#include <gflags/gflags.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "launch_plan.h"
#include "supervisor.h"
#include "switchyard/common/error.h"

DEFINE_int32(n, 0, "number of ranks to start on this host (required)");
DEFINE_int32(nodes, 1, "virtual nodes the ranks are spread over in contiguous blocks (n % nodes must be 0)");
DEFINE_string(rank_map, "", "cluster JSON file placing each rank on a node (instead of --nodes)");
DEFINE_double(timeout, 0, "seconds before a job still running is stopped (exit 124); 0 = no limit");
DEFINE_double(grace, 3, "seconds between SIGTERM and SIGKILL when stopping ranks");
DEFINE_bool(tag_output, true, "prefix each output line with \"[rank] \" (--notag-output: bare lines)");
DEFINE_int32(nnodes, 1, "multi-host mode: number of hosts, one sy-run each");
DEFINE_int32(node_rank, 0, "multi-host mode: index of this host (0 .. nnodes-1)");
DEFINE_string(master, "", "multi-host mode: ADDR:PORT of the rendezvous (rank 0's host)");
DEFINE_string(token, "", "multi-host mode: the job's shared secret (default: $SY_TOKEN)");

namespace {

using switchyard::InvalidArgument;

constexpr const char kUsage[] =
    "usage: sy-run -n N [--nodes M | --rank-map FILE] [--timeout S] [--grace S] [--[no]tag-output] -- PROGRAM ARGS...\n"
    "       sy-run -n N --nnodes H --node-rank I --master ADDR:PORT [--token T] -- PROGRAM ARGS...\n";

void print_help() {
  std::cout << kUsage << "\nflags:\n";
  std::vector<gflags::CommandLineFlagInfo> flags;
  gflags::GetAllFlags(&flags);
  for (const auto& f : flags) {
    if (f.filename != __FILE__) continue;
    std::string name = f.name;
    for (char& c : name) c = c == '_' ? '-' : c;
    std::cout << "  " << (name == "n" ? "-" : "--") << name << " (" << f.type << ", default " << f.default_value
              << ")\n      " << f.description << "\n";
  }
  std::cout << "\nenvironment given to each rank, exit codes and failure behaviour: docs/launcher.md\n";
}

// True when name is one of sy-run's own flags (not one of gflags' built-ins).
bool is_own_flag(const std::string& name, gflags::CommandLineFlagInfo* info) {
  return gflags::GetCommandLineFlagInfo(name.c_str(), info) && info->filename == __FILE__;
}

// Parses "-name value", "--name=value", "--bool", "--nobool" up to "--"; returns the
// program and its arguments. Throws InvalidArgument; handles --help (exits 0).
std::vector<std::string> parse_command_line(int argc, char** argv) {
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // the program starts here (no "--" given)
    std::string body = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string name = body.substr(0, body.find('='));
    bool has_value = body.find('=') != std::string::npos;
    std::string value = has_value ? body.substr(body.find('=') + 1) : "";
    for (char& c : name) c = c == '-' ? '_' : c;
    if (name == "help" || name == "h") {
      print_help();
      std::exit(0);
    }
    gflags::CommandLineFlagInfo info;
    if (!is_own_flag(name, &info)) {
      if (name.rfind("no", 0) == 0 && !has_value && is_own_flag(name.substr(2), &info) && info.type == "bool") {
        gflags::SetCommandLineOption(info.name.c_str(), "false");
        continue;
      }
      SY_THROW(InvalidArgument, "unknown flag '" << arg << "' (sy-run --help lists the flags)");
    }
    if (!has_value) {
      if (info.type == "bool") {
        value = "true";
      } else {
        SY_REQUIRE(i + 1 < argc, "flag '" << arg << "' needs a value");
        value = argv[++i];
      }
    }
    if (gflags::SetCommandLineOption(name.c_str(), value.c_str()).empty()) {
      SY_THROW(InvalidArgument, "bad value '" << value << "' for flag '" << arg << "' (" << info.type << " expected)");
    }
  }
  return std::vector<std::string>(argv + i, argv + argc);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace switchyard::run;
  gflags::SetUsageMessage(kUsage);
  LaunchPlan plan;
  SupervisorOptions supervisor;
  try {
    LaunchOptions options;
    options.program = parse_command_line(argc, argv);
    options.num_ranks = FLAGS_n;
    options.num_nodes = FLAGS_nodes;
    options.rank_map_path = FLAGS_rank_map;
    options.num_hosts = FLAGS_nnodes;
    options.host_rank = FLAGS_node_rank;
    options.master = FLAGS_master;
    options.token = FLAGS_token;
    SY_REQUIRE(std::isfinite(FLAGS_timeout) && FLAGS_timeout >= 0,
               "--timeout must be >= 0 seconds, got " << FLAGS_timeout);
    SY_REQUIRE(std::isfinite(FLAGS_grace) && FLAGS_grace >= 0, "--grace must be >= 0 seconds, got " << FLAGS_grace);
    supervisor.timeout_s = FLAGS_timeout;
    supervisor.grace_s = FLAGS_grace;
    supervisor.tag_output = FLAGS_tag_output;
    plan = make_launch_plan(options);
  } catch (const switchyard::InvalidArgument& e) {
    std::cerr << "sy-run: " << e.message() << "\n" << kUsage;
    return kExitUsage;
  } catch (const switchyard::Error& e) {
    // A rank map that cannot be read is an argument error too.
    std::cerr << "sy-run: " << e.message() << "\n";
    return kExitUsage;
  }
  try {
    return run_job(plan, supervisor);
  } catch (const switchyard::Error& e) {
    std::cerr << "sy-run: " << e.message() << "\n";
    return kExitCannotStart;
  }
}
