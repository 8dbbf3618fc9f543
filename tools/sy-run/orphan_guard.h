// OrphanGuard: a watchdog process that kills the ranks' process groups if sy-run dies
// without cleaning up (SIGKILL, a crash, the OOM killer).
//
// Each rank also has PR_SET_PDEATHSIG=SIGKILL, but that only reaches the rank itself,
// not the processes it started. The guard is forked before any rank, sits in its own
// process group (a Ctrl-C or a group kill aimed at sy-run does not reach it) and reads
// a pipe whose write end only sy-run holds (close-on-exec). sy-run sends it each rank's
// process group; when the pipe reaches end-of-file without a prior disarm(), sy-run is
// gone and the guard sends SIGKILL to every group it was told about, then exits.
// Not thread-safe; owned by the single sy-run thread.
#pragma once

#include <sys/types.h>

#include "unique_fd.h"

namespace switchyard::run {

class OrphanGuard {
 public:
  // Forks the guard process. Throws IoError when pipe or fork fails.
  OrphanGuard();
  // Disarms the guard, closes the pipe and reaps the guard (it exits at once).
  ~OrphanGuard();
  OrphanGuard(const OrphanGuard&) = delete;
  OrphanGuard& operator=(const OrphanGuard&) = delete;

  // The guard will SIGKILL process group pgid if sy-run dies.
  void watch(pid_t pgid);
  // sy-run finished its own cleanup: the guard exits without killing anything.
  void disarm();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  UniqueFd pipe_;  // write end
};

}  // namespace switchyard::run
