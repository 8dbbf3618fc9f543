// LauncherProcess: sy-run as a captured subprocess of a test (see launcher_process.h).
#include "launcher_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace switchyard::run::testing {

using Clock = std::chrono::steady_clock;

LauncherProcess::LauncherProcess(const std::vector<std::string>& args,
                                 const std::vector<std::pair<std::string, std::string>>& env) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv_strings = {SY_RUN_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  start_ = Clock::now();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    ::execv(argv[0], argv.data());
    ::_exit(126);
  }
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
}

LauncherProcess::~LauncherProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
}

bool LauncherProcess::pump(int timeout_ms) {
  pollfd fds[2];
  int n = 0;
  if (out_fd_ >= 0) fds[n++] = {out_fd_, POLLIN, 0};
  if (err_fd_ >= 0) fds[n++] = {err_fd_, POLLIN, 0};
  if (n == 0) return false;
  if (::poll(fds, n, timeout_ms) <= 0) return true;
  for (int i = 0; i < n; ++i) {
    if (fds[i].revents == 0) continue;
    char buf[65536];
    ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
    bool is_out = fds[i].fd == out_fd_;
    if (got > 0) {
      (is_out ? out_ : err_).append(buf, got);
    } else if (got == 0 || errno != EINTR) {
      ::close(fds[i].fd);
      (is_out ? out_fd_ : err_fd_) = -1;
    }
  }
  return true;
}

bool LauncherProcess::read_until(const std::function<bool(const std::string&, const std::string&)>& done,
                                 std::chrono::duration<double> limit) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit);
  while (!done(out_, err_) && Clock::now() < deadline) {
    if (!pump(20)) break;
  }
  return done(out_, err_);
}

void LauncherProcess::send_signal(int sig) {
  ::kill(pid_, sig);
}

LauncherResult LauncherProcess::wait(std::chrono::duration<double> limit) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit);
  LauncherResult result;
  int status = 0;
  for (;;) {
    pump(20);
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      result.out = out_;
      result.err = err_ + "\n[test: sy-run did not exit in time and was killed]";
      return result;
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  pid_ = -1;
  // sy-run is gone; whatever is still in the pipes comes out now (bounded).
  auto drain_deadline = Clock::now() + std::chrono::seconds(2);
  while ((out_fd_ >= 0 || err_fd_ >= 0) && Clock::now() < drain_deadline) pump(20);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = out_;
  result.err = err_;
  return result;
}

LauncherResult run_launcher(const std::vector<std::string>& args,
                            const std::vector<std::pair<std::string, std::string>>& env) {
  LauncherProcess process(args, env);
  return process.wait(std::chrono::seconds(30));
}

bool process_gone(pid_t pid, std::chrono::duration<double> limit) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit);
  for (;;) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    // A zombie has finished; it only waits for its new parent to reap it.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (std::getline(stat, line)) {
      size_t paren = line.rfind(')');
      if (paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z') return true;
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<pid_t> numbers_after(const std::string& text, const std::string& key) {
  std::vector<pid_t> numbers;
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    numbers.push_back(static_cast<pid_t>(std::atol(text.c_str() + at + key.size())));
  }
  return numbers;
}

}  // namespace switchyard::run::testing
