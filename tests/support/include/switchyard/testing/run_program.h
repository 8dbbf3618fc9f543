// run_program: runs a shell command under `timeout`, returning its exit status and its
// stdout and stderr together. A command killed by the time limit reports status 124.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace switchyard::testing {

struct ProgramRun {
  int status = -1;  // exit status, or -1 when it could not run or died by a signal
  std::string out;  // stdout and stderr together
};

inline ProgramRun run_program(const std::string& cmd, int timeout_s = 45) {
  ProgramRun r;
  FILE* p = popen(("timeout " + std::to_string(timeout_s) + " " + cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace switchyard::testing
