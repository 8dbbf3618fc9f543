// RankLauncher: starts N processes of a rank program the way sy-run would (SY_* variables,
// a rendezvous, a token), with a hard timeout, and collects exit status and output.
// Used by the multi-process comm tests; independent of sy-run so comm tests do not depend
// on the launcher under development.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace switchyard::comm::testing {

struct RankResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string output;  // stdout + stderr
};

struct LaunchSpec {
  std::string program;
  std::vector<std::string> args;
  int world_size = 1;
  std::vector<int> ranks_to_start;  // empty = all
  int nodes = 1;                    // contiguous blocks of ranks get SY_NODE=n0, n1, ...
  bool tcp = true;                  // TCP store (else file store)
  std::map<std::string, std::string> env;                   // for every rank
  std::map<int, std::map<std::string, std::string>> env_of;  // per rank overrides
  int timeout_s = 60;
  // A rank that stops itself (SIGSTOP, a hung peer): once every other rank has exited it
  // gets SIGKILL and SIGCONT, so no stopped process is left behind. -1: none.
  int stopped_rank = -1;
};

// A free TCP port (bound then released; the race is acceptable in tests).
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

inline std::vector<RankResult> launch_ranks(const LaunchSpec& spec) {
  char tmpl[] = "/tmp/sy_comm_test_XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string rendezvous = spec.tcp ? "127.0.0.1:" + std::to_string(free_port()) : "file:" + dir + "/store";
  std::vector<int> ranks = spec.ranks_to_start;
  if (ranks.empty())
    for (int r = 0; r < spec.world_size; ++r) ranks.push_back(r);
  int per_node = (spec.world_size + spec.nodes - 1) / spec.nodes;
  std::vector<pid_t> pids;
  for (int r : ranks) {
    pid_t pid = ::fork();
    if (pid == 0) {
      std::string out = dir + "/out." + std::to_string(r);
      int fd = ::open(out.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::setenv("SY_RANK", std::to_string(r).c_str(), 1);
      ::setenv("SY_WORLD_SIZE", std::to_string(spec.world_size).c_str(), 1);
      ::setenv("SY_RENDEZVOUS", rendezvous.c_str(), 1);
      ::setenv("SY_TOKEN", "test-token-1234", 1);
      ::setenv("SY_NODE", ("n" + std::to_string(r / per_node)).c_str(), 1);
      ::setenv("UCX_NET_DEVICES", "lo", 0);
      ::setenv("UCX_MEM_MMAP_HOOK_MODE", "none", 0);
      for (auto& [k, v] : spec.env) ::setenv(k.c_str(), v.c_str(), 1);
      auto it = spec.env_of.find(r);
      if (it != spec.env_of.end())
        for (auto& [k, v] : it->second) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(spec.program.c_str()));
      for (auto& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::alarm(static_cast<unsigned>(spec.timeout_s + 5));
      ::execv(spec.program.c_str(), argv.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<RankResult> results(ranks.size());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(spec.timeout_s);
  size_t left = pids.size();
  std::vector<bool> done(pids.size(), false);
  while (left > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        done[i] = true;
        --left;
        if (WIFEXITED(status)) results[i].exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) results[i].signal = WTERMSIG(status);
      }
    }
    if (left == 1 && spec.stopped_rank >= 0) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i] && ranks[i] == spec.stopped_rank) {
          ::kill(pids[i], SIGKILL);
          ::kill(pids[i], SIGCONT);
        }
    }
    if (left && std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i)
        if (!done[i]) {
          ::kill(pids[i], SIGKILL);
          ::waitpid(pids[i], nullptr, 0);
          results[i].output = "(killed by the test: hard timeout)\n";
          done[i] = true;
        }
      left = 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    std::ifstream f(dir + "/out." + std::to_string(ranks[i]));
    std::stringstream ss;
    ss << f.rdbuf();
    results[i].output += ss.str();
  }
  std::filesystem::remove_all(dir);
  return results;
}

// All ranks output, for failure messages.
inline std::string describe(const std::vector<RankResult>& rs) {
  std::ostringstream os;
  for (size_t i = 0; i < rs.size(); ++i)
    os << "--- process " << i << " exit " << rs[i].exit_code << " signal " << rs[i].signal << "\n" << rs[i].output;
  return os.str();
}

}  // namespace switchyard::comm::testing
