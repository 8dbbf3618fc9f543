// LauncherProcess: runs sy-run as a child of the test, captures its stdout and stderr,
// and answers "is this pid gone?" for leftover-process checks.
//
// Every wait is bounded; a test that would hang fails instead. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::run::testing {

struct LauncherResult {
  int exit_code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
  double seconds = 0;  // from start to exit
};

class LauncherProcess {
 public:
  // Starts `sy-run args...` with extra environment variables (name, value).
  explicit LauncherProcess(const std::vector<std::string>& args,
                           const std::vector<std::pair<std::string, std::string>>& env = {});
  ~LauncherProcess();  // SIGKILLs and reaps sy-run if still running
  LauncherProcess(const LauncherProcess&) = delete;
  LauncherProcess& operator=(const LauncherProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Reads output until done(out, err) holds or `limit` passes; returns done's last value.
  bool read_until(const std::function<bool(const std::string&, const std::string&)>& done,
                  std::chrono::duration<double> limit);
  void send_signal(int sig);
  // Reads all output until sy-run exits (at most `limit`; then SIGKILL and exit_code -1).
  LauncherResult wait(std::chrono::duration<double> limit);

 private:
  bool pump(int timeout_ms);  // one poll round; false when both pipes are closed
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
  std::chrono::steady_clock::time_point start_;
};

// Runs sy-run to completion (limit 30 s).
LauncherResult run_launcher(const std::vector<std::string>& args,
                            const std::vector<std::pair<std::string, std::string>>& env = {});

// True once pid no longer exists (or is a zombie), polling for at most `limit`.
bool process_gone(pid_t pid, std::chrono::duration<double> limit);

// All numbers that follow `key` ("pid=") in text, in order.
std::vector<pid_t> numbers_after(const std::string& text, const std::string& key);

}  // namespace switchyard::run::testing
