// sy_rank_probe: the program the launcher tests run as a rank.
//
// Prints what the tests need to check sy-run from outside, then misbehaves on request:
//   pid=<pid>                        always first (stdout), so tests can track every process
//   child=<pid>                      with --spawn-child: a forked child that sleeps forever
//   env rank=.. world=.. ...         with --env: the SY_* protocol variables on one line
// Options (applied in this order):
//   --env                 print the environment line
//   --spawn-child         fork a child that sleeps (it must die with the rank's group)
//   --ignore-term-rank R  rank R ignores SIGTERM
//   --sync-dir DIR        barrier: create DIR/ready.<rank>, wait until SY_WORLD_SIZE exist
//   --lines K --line-bytes B   K lines of B bytes on stdout and on stderr, each written in
//                         small pieces, then an unterminated "tail-r<rank>"
//   --crash-rank R        rank R raises SIGSEGV
//   --exit-rank R --exit-code C   rank R exits with status C
//   --sleep S             sleep S seconds before exiting 0
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

void write_str(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) std::exit(1);
    done += n;
  }
}

int count_ready(const std::string& dir) {
  int count = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) count += std::strncmp(e->d_name, "ready.", 6) == 0;
  ::closedir(d);
  return count;
}

// Every rank of the job has started and printed its pid (bounded: 20 s).
void barrier(const std::string& dir, int rank, int world) {
  std::string path = dir + "/ready." + std::to_string(rank);
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) ::close(fd);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (count_ready(dir) < world && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Lines written in 700-byte pieces with pauses, so sy-run sees partial lines.
void write_lines(int fd, const char* stream, int rank, int num_lines, int line_bytes) {
  for (int i = 0; i < num_lines; ++i) {
    std::string line = "r";
    line += std::to_string(rank);
    line.append(" ").append(stream).append(" i").append(std::to_string(i)).append(" ");
    if (static_cast<int>(line.size()) < line_bytes) line.append(line_bytes - line.size(), 'x');
    line += '\n';
    for (size_t at = 0; at < line.size(); at += 700) write_str(fd, line.substr(at, 700));
    if (i % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  write_str(fd, "tail-r" + std::to_string(rank));
}

}  // namespace

int main(int argc, char** argv) {
  int rank = std::atoi(env_or("SY_RANK", "-1").c_str());
  int world = std::atoi(env_or("SY_WORLD_SIZE", "1").c_str());
  write_str(1, "pid=" + std::to_string(::getpid()) + "\n");
  bool env = false, spawn_child = false;
  int ignore_term_rank = -1, crash_rank = -1, exit_rank = -1, exit_code = 0, lines = 0, line_bytes = 0;
  double sleep_s = 0;
  std::string sync_dir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sy_rank_probe: %s needs a value\n", a.c_str());
        std::exit(64);
      }
      return argv[++i];
    };
    if (a == "--env")
      env = true;
    else if (a == "--spawn-child")
      spawn_child = true;
    else if (a == "--ignore-term-rank")
      ignore_term_rank = std::stoi(next());
    else if (a == "--sync-dir")
      sync_dir = next();
    else if (a == "--lines")
      lines = std::stoi(next());
    else if (a == "--line-bytes")
      line_bytes = std::stoi(next());
    else if (a == "--crash-rank")
      crash_rank = std::stoi(next());
    else if (a == "--exit-rank")
      exit_rank = std::stoi(next());
    else if (a == "--exit-code")
      exit_code = std::stoi(next());
    else if (a == "--sleep")
      sleep_s = std::stod(next());
    else {
      std::fprintf(stderr, "sy_rank_probe: unknown option %s\n", a.c_str());
      return 64;
    }
  }
  if (env) {
    write_str(1, "env rank=" + env_or("SY_RANK", "") + " world=" + env_or("SY_WORLD_SIZE", "") +
                     " local_rank=" + env_or("SY_LOCAL_RANK", "") + " local_size=" + env_or("SY_LOCAL_SIZE", "") +
                     " node=" + env_or("SY_NODE", "") + " num_nodes=" + env_or("SY_NUM_NODES", "") +
                     " rendezvous=" + env_or("SY_RENDEZVOUS", "") + " token=" + env_or("SY_TOKEN", "") +
                     " job=" + env_or("SY_JOB_ID", "") + " rank_map=" + env_or("SY_RANK_MAP", "") + "\n");
  }
  if (ignore_term_rank == rank) ::signal(SIGTERM, SIG_IGN);
  if (spawn_child) {
    pid_t child = ::fork();
    if (child == 0) {
      for (;;) ::pause();
    }
    write_str(1, "child=" + std::to_string(child) + "\n");
  }
  if (!sync_dir.empty()) barrier(sync_dir, rank, world);
  if (lines > 0) {
    std::thread err_writer(write_lines, 2, "err", rank, lines, line_bytes);
    write_lines(1, "out", rank, lines, line_bytes);
    err_writer.join();
  }
  if (crash_rank == rank) {
    rlimit no_core{0, 0};  // no core file: keeps the test fast and the disk clean
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(SIGSEGV, SIG_DFL);  // die by the signal even under a sanitizer's handler
    ::raise(SIGSEGV);
  }
  if (exit_rank == rank) return exit_code;
  if (sleep_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s));
  return 0;
}
