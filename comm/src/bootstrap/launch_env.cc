// LaunchEnv::detect: launcher environment variables in the documented precedence.
#include "switchyard/comm/launch_env.h"

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <vector>

#include "switchyard/common/error.h"

extern char** environ;

namespace switchyard::comm {
namespace {

using Vars = std::map<std::string, std::string>;

const std::string* find(const Vars& v, const char* name) {
  auto it = v.find(name);
  return it == v.end() || it->second.empty() ? nullptr : &it->second;
}

int parse_int(const Vars& v, const char* name, int min_value) {
  const std::string* s = find(v, name);
  SY_REQUIRE(s, "launch environment: " << name << " is not set");
  char* end = nullptr;
  long x = std::strtol(s->c_str(), &end, 10);
  SY_REQUIRE(end && *end == '\0' && x >= min_value && x <= INT_MAX,
             "launch environment: " << name << "='" << *s << "' is not an integer >= " << min_value);
  return static_cast<int>(x);
}

int parse_int_or(const Vars& v, const char* name, int min_value, int fallback) {
  return find(v, name) ? parse_int(v, name, min_value) : fallback;
}

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf) != 0) return "localhost";
  return buf;
}

}  // namespace

int slurm_tasks_on_node(const std::string& list, int node_id) {
  // Items "N" or "N(xM)" separated by commas.
  int node = 0;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t comma = list.find(',', pos);
    std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int tasks = 0, repeat = 1;
    char tail = 0;
    if (std::sscanf(item.c_str(), "%d(x%d%c", &tasks, &repeat, &tail) == 3 && tail == ')') {
    } else if (std::sscanf(item.c_str(), "%d", &tasks) == 1) {
      repeat = 1;
    } else {
      SY_THROW(InvalidArgument, "launch environment: cannot parse Slurm tasks per node '" << list << "'");
    }
    if (node_id < node + repeat) return tasks;
    node += repeat;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  SY_THROW(InvalidArgument, "launch environment: Slurm tasks per node '" << list << "' has no node " << node_id);
}

LaunchEnv LaunchEnv::detect() {
  Vars vars;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq != std::string::npos) vars.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return detect(vars);
}

LaunchEnv LaunchEnv::detect(const Vars& v) {
  LaunchEnv env;
  if (find(v, "SY_RANK")) {
    env.launcher = "sy-run";
    env.rank = parse_int(v, "SY_RANK", 0);
    env.world_size = parse_int(v, "SY_WORLD_SIZE", 1);
    env.local_rank = parse_int_or(v, "SY_LOCAL_RANK", 0, -1);
    env.local_size = parse_int_or(v, "SY_LOCAL_SIZE", 1, -1);
  } else if (find(v, "RANK") && find(v, "WORLD_SIZE")) {
    env.launcher = "torchrun";
    env.rank = parse_int(v, "RANK", 0);
    env.world_size = parse_int(v, "WORLD_SIZE", 1);
    env.local_rank = parse_int_or(v, "LOCAL_RANK", 0, -1);
    env.local_size = parse_int_or(v, "LOCAL_WORLD_SIZE", 1, -1);
  } else if (find(v, "OMPI_COMM_WORLD_RANK")) {
    env.launcher = "openmpi";
    env.rank = parse_int(v, "OMPI_COMM_WORLD_RANK", 0);
    env.world_size = parse_int(v, "OMPI_COMM_WORLD_SIZE", 1);
    env.local_rank = parse_int_or(v, "OMPI_COMM_WORLD_LOCAL_RANK", 0, -1);
    env.local_size = parse_int_or(v, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, -1);
  } else if (find(v, "SLURM_PROCID")) {
    env.launcher = "slurm";
    env.rank = parse_int(v, "SLURM_PROCID", 0);
    env.world_size = find(v, "SLURM_NTASKS") ? parse_int(v, "SLURM_NTASKS", 1) : parse_int(v, "SLURM_STEP_NUM_TASKS", 1);
    env.local_rank = parse_int_or(v, "SLURM_LOCALID", 0, -1);
    const std::string* tpn = find(v, "SLURM_STEP_TASKS_PER_NODE");
    if (!tpn) tpn = find(v, "SLURM_TASKS_PER_NODE");
    env.local_size = tpn ? slurm_tasks_on_node(*tpn, parse_int_or(v, "SLURM_NODEID", 0, 0)) : -1;
  } else {
    env.launcher = "none";
  }
  SY_REQUIRE(env.rank < env.world_size, "launch environment (" << env.launcher << "): rank " << env.rank
                                                               << " is not below world size " << env.world_size);
  env.host = host_name();
  env.node = find(v, "SY_NODE") ? *find(v, "SY_NODE") : env.host;

  if (const std::string* r = find(v, "SY_RENDEZVOUS")) {
    env.rendezvous = *r;
  } else if (find(v, "MASTER_ADDR") && find(v, "MASTER_PORT")) {
    env.rendezvous = *find(v, "MASTER_ADDR") + ":" + *find(v, "MASTER_PORT");
  }
  if (const std::string* t = find(v, "SY_TOKEN")) env.token = *t;
  for (const char* name : {"SY_JOB_ID", "TORCHELASTIC_RUN_ID", "OMPI_MCA_ess_base_jobid", "SLURM_JOB_ID"}) {
    if (const std::string* j = find(v, name)) {
      env.job_id = *j;
      break;
    }
  }
  if (env.world_size > 1) {
    SY_REQUIRE(!env.rendezvous.empty(),
               "launch environment (" << env.launcher << ", rank " << env.rank << " of " << env.world_size
                                      << "): no rendezvous address; set SY_RENDEZVOUS=host:port (rank 0 listens "
                                         "there) or SY_RENDEZVOUS=file:PATH on a shared file system");
    bool file = env.rendezvous.rfind("file:", 0) == 0;
    SY_REQUIRE(file || !env.token.empty(),
               "launch environment (" << env.launcher << "): SY_TOKEN is not set; the TCP rendezvous at "
                                      << env.rendezvous << " requires the job's secret token");
    if (!file) {
      size_t colon = env.rendezvous.rfind(':');
      SY_REQUIRE(colon != std::string::npos && colon > 0 && colon + 1 < env.rendezvous.size(),
                 "launch environment: rendezvous '" << env.rendezvous << "' is not host:port or file:PATH");
    }
  }
  return env;
}

}  // namespace switchyard::comm
