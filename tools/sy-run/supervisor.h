// run_job: starts the ranks of a LaunchPlan and supervises them until every one is gone.
//
// Single-threaded event loop (poll over the ranks' output pipes and a signalfd):
//   - relays each rank's stdout/stderr line by line with a "[rank] " prefix;
//   - on the first rank that dies (non-zero exit or signal), on SIGINT/SIGTERM/SIGHUP to
//     sy-run, or when --timeout runs out: prints why, sends SIGTERM to every rank's
//     process group, and SIGKILL to the groups still alive `grace` seconds later
//     (a second SIGINT/SIGTERM kills at once);
//   - is a child subreaper, so processes the ranks start are reaped here, and a rank
//     counts as gone only when its whole process group is;
//   - an OrphanGuard kills the groups if sy-run itself is killed.
// Blocks until the job is over. Takes over SIGCHLD/SIGINT/SIGTERM/SIGHUP (blocked, read
// from a signalfd) and ignores SIGPIPE for the rest of the process's life.
#pragma once

#include "launch_plan.h"

namespace switchyard::run {

struct SupervisorOptions {
  double timeout_s = 0;  // whole-job limit; 0 = none
  double grace_s = 3;  // SIGTERM -> SIGKILL delay
  bool tag_output = true;  // prefix rank output lines with "[rank] "
};

// sy-run's exit codes (docs/launcher.md).
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitTimeout = 124;
constexpr int kExitCannotStart = 127;

// Returns the job's exit code: 0 when every rank exited 0; the first failed rank's exit
// status, or 128 + signal when it was killed; 128 + signal when sy-run was stopped by a
// signal; kExitTimeout; kExitCannotStart when a rank could not be started.
int run_job(const LaunchPlan& plan, const SupervisorOptions& options);

}  // namespace switchyard::run
