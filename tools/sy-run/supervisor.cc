// run_job: the sy-run event loop (see supervisor.h).
#include "supervisor.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "line_relay.h"
#include "orphan_guard.h"
#include "rank_process.h"
#include "switchyard/common/error.h"
#include "switchyard/common/param.h"

namespace switchyard::run {
namespace {

const Param<bool> kOrphanGuard("RUN_ORPHAN_GUARD", true, "",
                               "sy-run starts a watchdog that kills the ranks' process groups if sy-run is killed "
                               "(off only to test the ranks' parent-death signal on its own)");

using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// How long to keep reading output after the last process is gone (a process that left
// the group with setsid may still hold a pipe).
constexpr Seconds kDrainTime{1.0};
// How long to wait for SIGKILLed groups to vanish before giving up on them.
constexpr Seconds kKillWaitTime{2.0};
// Poll period while a reaped rank's group still has processes.
constexpr Seconds kGroupPollPeriod{0.02};

void message(const std::string& text) {
  std::string line = "sy-run: " + text + "\n";
  write_all(STDERR_FILENO, line.data(), line.size());
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

// "exited with status 3" / "killed by signal 11 (Segmentation fault)".
std::string describe_status(int status) {
  std::ostringstream s;
  if (WIFEXITED(status)) {
    s << "exited with status " << WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    const char* text = strsignal(WTERMSIG(status));
    s << "killed by signal " << WTERMSIG(status) << " (" << (text != nullptr ? text : "unknown") << ")";
  } else {
    s << "ended with wait status " << status;
  }
  return s.str();
}

// Reads what the pipe holds now (bounded, for fairness between ranks) into the relay;
// closes the fd at end of stream.
void read_output(UniqueFd& fd, LineRelay& relay) {
  char buf[16384];
  for (int i = 0; i < 16; ++i) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n > 0) {
      relay.feed(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    relay.finish();  // end of stream (or a read error: treat the same)
    fd.reset();
    return;
  }
}

struct RankState {
  RankState(int rank_, SpawnedRank spawned, const std::string& prefix)
      : rank(rank_),
        pid(spawned.pid),
        out(std::move(spawned.out)),
        err(std::move(spawned.err)),
        out_relay(prefix, STDOUT_FILENO),
        err_relay(prefix, STDERR_FILENO) {}

  int rank;
  pid_t pid;  // also the process group id
  UniqueFd out;
  UniqueFd err;
  LineRelay out_relay;
  LineRelay err_relay;
  bool running = true;  // not reaped yet
  bool group_alive = true;  // some process of its group may still exist
};

class Supervisor {
 public:
  Supervisor(const LaunchPlan& plan, const SupervisorOptions& options) : plan_(plan), options_(options) {}
  // Normally everything is gone by now; after an exception in run() this is the cleanup.
  ~Supervisor() {
    for (RankState& r : ranks_) {
      if (r.group_alive) ::kill(-r.pid, SIGKILL);
    }
  }
  int run();

 private:
  void take_over_signals();
  void start_ranks();
  void handle_signals();
  void reap();
  void on_exit(RankState& r, int status);
  void update_groups();
  void begin_stop(int exit_code, const std::string& why);
  void kill_groups();
  std::string running_ranks() const;
  std::string stop_plan() const;
  std::string alive_groups() const;
  bool all_gone() const;
  bool pipes_open() const;

  const LaunchPlan& plan_;
  SupervisorOptions options_;
  std::unique_ptr<OrphanGuard> guard_;
  std::vector<RankState> ranks_;
  sigset_t child_mask_;
  UniqueFd signal_fd_;
  bool stopping_ = false;
  bool killed_ = false;
  int exit_code_ = kExitOk;
  Clock::time_point start_;
  Clock::time_point kill_at_ = Clock::time_point::max();
  Clock::time_point give_up_at_ = Clock::time_point::max();
  Clock::time_point drain_until_ = Clock::time_point::max();
};

void Supervisor::take_over_signals() {
  ::signal(SIGPIPE, SIG_IGN);
  // An inherited SIG_IGN for SIGCHLD would make the kernel reap the ranks behind our back.
  ::signal(SIGCHLD, SIG_DFL);
  // Orphans of the ranks' own children are reparented here, so their groups can empty.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
  if (::sigprocmask(SIG_BLOCK, &set, &child_mask_) != 0) SY_THROW(IoError, "sigprocmask: " << errno_text(errno));
  signal_fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_.valid()) SY_THROW(IoError, "signalfd: " << errno_text(errno));
}

void Supervisor::start_ranks() {
  for (const RankLaunch& launch : plan_.ranks) {
    SpawnedRank spawned;
    try {
      spawned = spawn_rank(plan_.program, launch, child_mask_);
    } catch (const IoError& e) {
      message(e.message());
      begin_stop(kExitCannotStart, "");
      return;
    }
    if (guard_) guard_->watch(spawned.pid);
    std::string prefix;
    if (options_.tag_output) prefix.append("[").append(std::to_string(launch.rank)).append("] ");
    ranks_.emplace_back(launch.rank, std::move(spawned), prefix);
  }
}

void Supervisor::handle_signals() {
  signalfd_siginfo info;
  while (::read(signal_fd_.get(), &info, sizeof info) == sizeof info) {
    int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) continue;  // reap() runs every iteration
    if (!stopping_) {
      begin_stop(128 + sig, "received " + signal_name(sig) + "; " + stop_plan());
    } else if (!killed_) {
      message("received " + signal_name(sig) + " again; killing all ranks now");
      kill_at_ = Clock::now();
    }
  }
}

void Supervisor::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    for (RankState& r : ranks_) {
      if (r.pid == pid && r.running) on_exit(r, status);
    }
    // Anything else is the guard or an orphan of a rank: nothing to do but reap it.
  }
}

void Supervisor::on_exit(RankState& r, int status) {
  r.running = false;
  bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (!failed || stopping_) return;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // The rank's last words come before sy-run's report of its death.
  if (r.out.valid()) read_output(r.out, r.out_relay);
  if (r.err.valid()) read_output(r.err, r.err_relay);
  message("rank " + std::to_string(r.rank) + " (pid " + std::to_string(r.pid) + ") " + describe_status(status));
  bool others = std::any_of(ranks_.begin(), ranks_.end(), [](const RankState& o) { return o.running; });
  begin_stop(code, others ? stop_plan() : "");
}

void Supervisor::update_groups() {
  for (RankState& r : ranks_) {
    if (r.running || !r.group_alive) continue;
    if (::kill(-r.pid, 0) != 0 && errno == ESRCH) r.group_alive = false;
  }
}

void Supervisor::begin_stop(int exit_code, const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  exit_code_ = exit_code;
  if (!why.empty()) message(why);
  for (RankState& r : ranks_) {
    if (!r.group_alive) continue;
    ::kill(-r.pid, SIGTERM);
    ::kill(-r.pid, SIGCONT);  // a stopped process handles SIGTERM only once continued
  }
  kill_at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(Seconds(options_.grace_s));
}

void Supervisor::kill_groups() {
  killed_ = true;
  for (RankState& r : ranks_) {
    if (r.running) {
      std::ostringstream s;
      s << "rank " << r.rank << " (pid " << r.pid << ") still running " << options_.grace_s
        << " s after SIGTERM; sending SIGKILL";
      message(s.str());
    }
    if (r.group_alive) ::kill(-r.pid, SIGKILL);
  }
  give_up_at_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(kKillWaitTime);
}

std::string Supervisor::running_ranks() const {
  std::ostringstream s;
  bool first = true;
  for (const RankState& r : ranks_) {
    if (!r.running) continue;
    s << (first ? "" : ", ") << r.rank << " (pid " << r.pid << ")";
    first = false;
  }
  return s.str();
}

// "stopping 3 ranks (SIGTERM, then SIGKILL after 3 s)".
std::string Supervisor::stop_plan() const {
  long live = std::count_if(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.running; });
  std::ostringstream s;
  s << "stopping " << live << (live == 1 ? " rank" : " ranks") << " (SIGTERM, then SIGKILL after " << options_.grace_s
    << " s)";
  return s.str();
}

// "1 (pgid 1235), 3 (pgid 1237)": ranks whose process group still has processes.
std::string Supervisor::alive_groups() const {
  std::ostringstream s;
  bool first = true;
  for (const RankState& r : ranks_) {
    if (!r.group_alive) continue;
    s << (first ? "" : ", ") << r.rank << " (pgid " << r.pid << ")";
    first = false;
  }
  return s.str();
}

bool Supervisor::all_gone() const {
  return std::none_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.running || r.group_alive; });
}

bool Supervisor::pipes_open() const {
  return std::any_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.out.valid() || r.err.valid(); });
}

int Supervisor::run() {
  if (kOrphanGuard.get()) guard_ = std::make_unique<OrphanGuard>();
  take_over_signals();
  start_ = Clock::now();
  start_ranks();
  Clock::time_point deadline = Clock::time_point::max();
  if (options_.timeout_s > 0)
    deadline = start_ + std::chrono::duration_cast<Clock::duration>(Seconds(options_.timeout_s));

  std::vector<pollfd> fds;  // [0] the signalfd, then one per open output pipe
  std::vector<std::pair<UniqueFd*, LineRelay*>> sources;  // the pipe and relay of fds[i + 1]
  for (;;) {
    reap();
    update_groups();
    Clock::time_point now = Clock::now();
    if (!stopping_ && now >= deadline) {
      std::ostringstream s;
      s << "job timed out after " << options_.timeout_s << " s; ranks still running: " << running_ranks();
      begin_stop(kExitTimeout, s.str());
    }
    bool ranks_done = std::none_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return r.running; });
    if (ranks_done && !all_gone() && !stopping_) {
      begin_stop(exit_code_, "processes started by the ranks outlived them; stopping them");
    }
    if (stopping_ && !killed_ && now >= kill_at_) kill_groups();
    if (killed_ && now >= give_up_at_ && !all_gone()) {
      std::ostringstream s;
      s << "processes of ranks " << alive_groups() << " still exist " << kKillWaitTime.count()
        << " s after SIGKILL; giving up on them";
      message(s.str());
      break;
    }
    if (all_gone()) {
      if (!pipes_open()) break;
      if (drain_until_ == Clock::time_point::max()) {
        drain_until_ = now + std::chrono::duration_cast<Clock::duration>(kDrainTime);
      }
      if (now >= drain_until_) break;
    }

    Clock::time_point wake = std::min({deadline, stopping_ && !killed_ ? kill_at_ : Clock::time_point::max(),
                                       killed_ ? give_up_at_ : Clock::time_point::max(), drain_until_});
    bool poll_groups =
        std::any_of(ranks_.begin(), ranks_.end(), [](const RankState& r) { return !r.running && r.group_alive; });
    if (poll_groups) wake = std::min(wake, now + std::chrono::duration_cast<Clock::duration>(kGroupPollPeriod));
    int timeout_ms = -1;
    if (wake != Clock::time_point::max()) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(wake - now).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(ms, 0, 60 * 60 * 1000));
    }

    fds.assign(1, {signal_fd_.get(), POLLIN, 0});
    sources.clear();
    for (RankState& r : ranks_) {
      for (auto [fd, relay] : {std::pair{&r.out, &r.out_relay}, std::pair{&r.err, &r.err_relay}}) {
        if (!fd->valid()) continue;
        fds.push_back({fd->get(), POLLIN, 0});
        sources.emplace_back(fd, relay);
      }
    }
    int ready = ::poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) SY_THROW(IoError, "poll: " << errno_text(errno));
    if (ready <= 0) continue;
    if (fds[0].revents != 0) handle_signals();
    for (size_t i = 0; i < sources.size(); ++i) {
      if (fds[i + 1].revents != 0) read_output(*sources[i].first, *sources[i].second);
    }
  }
  for (RankState& r : ranks_) {
    r.out_relay.finish();
    r.err_relay.finish();
  }
  if (all_gone()) guard_.reset();  // disarms: nothing left for it to kill
  return exit_code_;
}

}  // namespace

int run_job(const LaunchPlan& plan, const SupervisorOptions& options) {
  Supervisor supervisor(plan, options);
  return supervisor.run();
}

}  // namespace switchyard::run
