// spawn_rank: fork+exec of one rank, in its own process group, with piped stdout/stderr.
//
// The child:
//   - leads a new process group (pgid = pid), so sy-run can signal the rank together
//     with every process it starts;
//   - asks for SIGKILL when sy-run dies (PR_SET_PDEATHSIG), and exits at once if sy-run
//     already died between fork and prctl (getppid check);
//   - reads /dev/null, writes stdout/stderr into pipes read by sy-run;
//   - gets the signal mask and dispositions sy-run had before it took over signals.
// spawn_rank blocks until exec succeeded or failed (a close-on-exec pipe carries errno),
// so a missing program is reported once, by sy-run, rather than by every rank.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "launch_plan.h"
#include "unique_fd.h"

namespace switchyard::run {

struct SpawnedRank {
  pid_t pid = -1;  // also its process group id
  UniqueFd out;  // read end of the rank's stdout, non-blocking
  UniqueFd err;  // read end of the rank's stderr, non-blocking
};

// Starts program with sy-run's environment minus protocol_variables() plus launch.env.
// child_mask is the signal mask the rank starts with. Throws IoError naming the rank
// and the cause when fork, pipe or exec fails (a failed exec's child is reaped).
SpawnedRank spawn_rank(const std::vector<std::string>& program, const RankLaunch& launch, const sigset_t& child_mask);

}  // namespace switchyard::run
