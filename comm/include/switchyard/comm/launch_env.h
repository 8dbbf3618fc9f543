// LaunchEnv: who this process is in the job, read from the launcher's environment.
//
// Precedence (first match wins for rank / world size / local rank / local size):
//   1. sy-run:   SY_RANK, SY_WORLD_SIZE, SY_LOCAL_RANK, SY_LOCAL_SIZE
//   2. torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
//   3. Open MPI: OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   4. Slurm:    SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (local size from
//                SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE, e.g. "2(x3),1")
//   5. none of them: a single process (rank 0 of 1).
// Independently of the launcher:
//   rendezvous: SY_RENDEZVOUS ("host:port" or "file:PATH"), else torchrun's
//               MASTER_ADDR:MASTER_PORT; none with more than one rank is an error.
//   token:      SY_TOKEN; required for a TCP rendezvous with more than one rank.
//   node:       SY_NODE (a virtual node name), else the host name.
//   job id:     SY_JOB_ID, TORCHELASTIC_RUN_ID, OMPI_MCA_ess_base_jobid, SLURM_JOB_ID.
#pragma once

#include <map>
#include <string>

namespace switchyard::comm {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // -1 when the launcher does not say (the RankMap knows)
  int local_size = 1;  // -1 when the launcher does not say
  std::string node;        // node name (virtual or host name)
  std::string host;        // this machine's host name
  std::string rendezvous;  // "host:port", "file:PATH" or "" (single process)
  std::string token;
  std::string job_id;
  std::string launcher;  // "sy-run", "torchrun", "openmpi", "slurm", "none"

  // Reads the process environment. Throws InvalidArgument naming the variable on a
  // malformed value, a missing rendezvous address or a missing token.
  static LaunchEnv detect();
  // Same, from an explicit variable map (tests).
  static LaunchEnv detect(const std::map<std::string, std::string>& vars);
};

// Parses Slurm's tasks-per-node list ("2(x3),1") and returns the tasks on node `node_id`.
int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id);

}  // namespace switchyard::comm
