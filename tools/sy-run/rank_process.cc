// spawn_rank: fork+exec of one rank (see rank_process.h).
#include "rank_process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "switchyard/common/error.h"

extern char** environ;

namespace switchyard::run {
namespace {

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Pipe make_pipe(int rank, const char* what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    SY_THROW(IoError, "rank " << rank << ": pipe for " << what << ": " << errno_text(errno));
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool is_protocol_variable(const char* entry) {
  const char* eq = std::strchr(entry, '=');
  size_t len = eq != nullptr ? static_cast<size_t>(eq - entry) : std::strlen(entry);
  for (const std::string& name : protocol_variables()) {
    if (name.size() == len && std::strncmp(entry, name.data(), len) == 0) return true;
  }
  return false;
}

// In the child after fork: only async-signal-safe calls until exec.
[[noreturn]] void exec_child(pid_t parent, int out_fd, int err_fd, int status_fd, char** argv, char** envp,
                             const sigset_t& child_mask) {
  int err = 0;
  ::setpgid(0, 0);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0 || ::dup2(null_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) {
    err = errno;
  } else {
    ::signal(SIGPIPE, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &child_mask, nullptr);
    ::execvpe(argv[0], argv, envp);
    err = errno;
  }
  ssize_t ignored = ::write(status_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

}  // namespace

SpawnedRank spawn_rank(const std::vector<std::string>& program, const RankLaunch& launch, const sigset_t& child_mask) {
  // Everything the child needs is built before fork.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!is_protocol_variable(*e)) env_strings.emplace_back(*e);
  }
  for (const auto& [name, value] : launch.env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = program;
  std::vector<char*> argv;
  for (std::string& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  Pipe out = make_pipe(launch.rank, "stdout");
  Pipe err = make_pipe(launch.rank, "stderr");
  Pipe status = make_pipe(launch.rank, "exec status");
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) SY_THROW(IoError, "cannot start rank " << launch.rank << ": fork: " << errno_text(errno));
  if (pid == 0)
    exec_child(parent, out.write.get(), err.write.get(), status.write.get(), argv.data(), envp.data(), child_mask);

  // Both sides call setpgid so the group exists before either one relies on it. EACCES
  // here means the child already exec'd, which implies it already set its own group.
  ::setpgid(pid, pid);
  out.write.reset();
  err.write.reset();
  status.write.reset();
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(status.read.get(), &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int ignored;
    while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
    SY_THROW(IoError, "cannot start rank " << launch.rank << ": " << program[0] << ": " << errno_text(exec_errno));
  }
  ::fcntl(out.read.get(), F_SETFL, O_NONBLOCK);
  ::fcntl(err.read.get(), F_SETFL, O_NONBLOCK);
  return {pid, std::move(out.read), std::move(err.read)};
}

}  // namespace switchyard::run
