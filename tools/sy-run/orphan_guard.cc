// OrphanGuard: kills the ranks' process groups when sy-run dies (see orphan_guard.h).
#include "orphan_guard.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "switchyard/common/error.h"

namespace switchyard::run {
namespace {

// The guard's whole life: read "+PGID\n" and "disarm\n" lines until end-of-file.
[[noreturn]] void guard_main(int read_fd) {
  ::setpgid(0, 0);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGQUIT, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
  }
  std::vector<pid_t> groups;
  bool disarmed = false;
  std::string line;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(read_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        line += buf[i];
        continue;
      }
      if (line == "disarm") disarmed = true;
      if (!line.empty() && line[0] == '+') groups.push_back(static_cast<pid_t>(std::atol(line.c_str() + 1)));
      line.clear();
    }
  }
  if (!disarmed) {
    for (pid_t g : groups) {
      if (g > 1) ::kill(-g, SIGKILL);
    }
  }
  ::_exit(0);
}

void send_line(int fd, const std::string& line) {
  std::string text = line + "\n";
  write_all(fd, text.data(), text.size());
}

}  // namespace

OrphanGuard::OrphanGuard() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) SY_THROW(IoError, "orphan guard: pipe: " << errno_text(errno));
  UniqueFd read_end(fds[0]);
  pipe_.reset(fds[1]);
  pid_ = ::fork();
  if (pid_ < 0) SY_THROW(IoError, "orphan guard: fork: " << errno_text(errno));
  if (pid_ == 0) {
    pipe_.reset();
    guard_main(read_end.get());
  }
}

OrphanGuard::~OrphanGuard() {
  disarm();
  pipe_.reset();
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

void OrphanGuard::watch(pid_t pgid) {
  std::string line = "+";
  line += std::to_string(pgid);
  send_line(pipe_.get(), line);
}

void OrphanGuard::disarm() {
  if (pipe_.valid()) send_line(pipe_.get(), "disarm");
}

}  // namespace switchyard::run
