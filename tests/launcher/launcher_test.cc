// sy-run end to end: environment protocol, output relaying, and the failure paths (a
// crashing rank, a hung job, a rank ignoring SIGTERM, Ctrl-C, a killed launcher, bad
// arguments). Each failure test checks the message, the exit code, how long sy-run took,
// and that every process the job started (ranks and their children) is gone.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "launcher_process.h"

namespace switchyard::run::testing {
namespace {

using std::chrono::seconds;

const std::string kProbe = SY_RANK_PROBE_PATH;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// "key=value" fields of the probe's env line.
std::map<std::string, std::string> fields_of(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::istringstream in(line);
  for (std::string word; in >> word;) {
    size_t eq = word.find('=');
    if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return fields;
}

// Env lines by rank, from "[r] env rank=r ..." stdout lines; checks prefix == SY_RANK.
std::map<int, std::map<std::string, std::string>> env_by_rank(const std::string& out) {
  std::map<int, std::map<std::string, std::string>> result;
  std::regex env_line(R"(^\[(\d+)\] env (.*)$)");
  for (const std::string& line : lines_of(out)) {
    std::smatch m;
    if (!std::regex_match(line, m, env_line)) continue;
    auto fields = fields_of(m[2]);
    EXPECT_EQ(fields["rank"], m[1].str()) << "prefix and SY_RANK disagree: " << line;
    result[std::stoi(m[1])] = fields;
  }
  return result;
}

// Every pid the probes reported (ranks and their children) disappears within 3 s.
void expect_no_leftovers(const LauncherResult& r, size_t min_pids) {
  std::vector<pid_t> pids = numbers_after(r.out, "pid=");
  std::vector<pid_t> children = numbers_after(r.out, "child=");
  pids.insert(pids.end(), children.begin(), children.end());
  EXPECT_GE(pids.size(), min_pids) << "stdout:\n" << r.out;
  for (pid_t pid : pids) EXPECT_TRUE(process_gone(pid, seconds(3))) << "process " << pid << " was left behind";
}

// The pid rank `rank` reported ("[rank] pid=N"), or -1.
pid_t reported_pid(const std::string& out, int rank) {
  std::vector<pid_t> pids = numbers_after(out, "[" + std::to_string(rank) + "] pid=");
  return pids.empty() ? -1 : pids.front();
}

// A fresh directory for the probes' start barrier.
class SyncDir {
 public:
  SyncDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "sy-run-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~SyncDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LauncherTest, SetsRankEnvironmentOnTwoNodes) {
  LauncherResult r = run_launcher({"-n", "4", "--nodes", "2", "--", kProbe, "--env"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 4u) << r.out;
  std::regex rendezvous(R"(127\.0\.0\.1:\d+)");
  std::regex token("[0-9a-f]{32}");
  for (int rank = 0; rank < 4; ++rank) {
    auto& e = env[rank];
    EXPECT_EQ(e["world"], "4");
    EXPECT_EQ(e["node"], std::to_string(rank / 2));
    EXPECT_EQ(e["local_rank"], std::to_string(rank % 2));
    EXPECT_EQ(e["local_size"], "2");
    EXPECT_EQ(e["num_nodes"], "2");
    EXPECT_TRUE(std::regex_match(e["rendezvous"], rendezvous)) << e["rendezvous"];
    EXPECT_TRUE(std::regex_match(e["token"], token)) << e["token"];
    EXPECT_FALSE(e["job"].empty());
    EXPECT_EQ(e["rank_map"], "");
    // One job: every rank sees the same rendezvous, token and job id.
    EXPECT_EQ(e["rendezvous"], env[0]["rendezvous"]);
    EXPECT_EQ(e["token"], env[0]["token"]);
    EXPECT_EQ(e["job"], env[0]["job"]);
  }
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, EachJobGetsItsOwnToken) {
  LauncherResult a = run_launcher({"-n", "1", "--", kProbe, "--env"});
  LauncherResult b = run_launcher({"-n", "1", "--", kProbe, "--env"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(env_by_rank(a.out)[0]["token"], env_by_rank(b.out)[0]["token"]);
  EXPECT_NE(env_by_rank(a.out)[0]["job"], env_by_rank(b.out)[0]["job"]);
}

TEST(LauncherTest, MultiHostModeRunsThisHostsSliceOfGlobalRanks) {
  LauncherResult r = run_launcher(
      {"-n", "2", "--nnodes", "3", "--node-rank", "1", "--master", "10.1.2.3:29500", "--", kProbe, "--env"},
      {{"SY_TOKEN", "feedbeef"}, {"SY_RANK_MAP", "/stale/from/outer/job"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 2u) << r.out;
  for (int local = 0; local < 2; ++local) {
    auto& e = env[2 + local];  // host 1 of 3 with 2 ranks each: global ranks 2 and 3
    EXPECT_EQ(e["world"], "6");
    EXPECT_EQ(e["node"], "1");
    EXPECT_EQ(e["num_nodes"], "3");
    EXPECT_EQ(e["local_rank"], std::to_string(local));
    EXPECT_EQ(e["local_size"], "2");
    EXPECT_EQ(e["rendezvous"], "10.1.2.3:29500");
    EXPECT_EQ(e["token"], "feedbeef");
    EXPECT_EQ(e["rank_map"], "");
  }
}

TEST(LauncherTest, MultiHostTokenFlagOverridesEnvironment) {
  LauncherResult r = run_launcher({"-n", "1", "--nnodes", "2", "--node-rank", "0", "--master", "[::1]:7000", "--token",
                                   "0123abcd", "--", kProbe, "--env"},
                                  {{"SY_TOKEN", "from-env"}, {"SY_JOB_ID", "outer-job"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 1u) << r.out;
  EXPECT_EQ(env[0]["token"], "0123abcd");
  EXPECT_EQ(env[0]["rendezvous"], "[::1]:7000");
  EXPECT_EQ(env[0]["job"], "outer-job") << "every host of a job shares SY_JOB_ID when it is set";
  EXPECT_EQ(env[0]["world"], "2");
}

TEST(LauncherTest, MultiHostModeNeedsAToken) {
  LauncherResult r = run_launcher(
      {"-n", "2", "--nnodes", "2", "--node-rank", "0", "--master", "10.0.0.1:29500", "--", kProbe}, {{"SY_TOKEN", ""}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("needs the job token"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(LauncherTest, RankMapPlacesRanksOnItsHosts) {
  SyncDir dir;
  std::string map = dir.path() + "/cluster.json";
  // Hosts used in the order a, b: rank 0 -> node 0, rank 1 -> node 1, rank 2 -> node 0.
  std::ofstream(map) << R"({"hosts": [{"name": "a"}, {"name": "b"}],
                            "ranks": [{"host": "a"}, {"host": "b"}, {"host": "a"}]})";
  LauncherResult r = run_launcher({"-n", "3", "--rank-map", map, "--", kProbe, "--env"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 3u) << r.out;
  const int node[] = {0, 1, 0}, local_rank[] = {0, 0, 1}, local_size[] = {2, 1, 2};
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(env[rank]["node"], std::to_string(node[rank]));
    EXPECT_EQ(env[rank]["local_rank"], std::to_string(local_rank[rank]));
    EXPECT_EQ(env[rank]["local_size"], std::to_string(local_size[rank]));
    EXPECT_EQ(env[rank]["num_nodes"], "2");
    EXPECT_EQ(env[rank]["rank_map"], std::filesystem::canonical(map).string());
  }

  LauncherResult misfit = run_launcher({"-n", "4", "--rank-map", map, "--", kProbe});
  EXPECT_EQ(misfit.exit_code, 2);
  EXPECT_NE(misfit.err.find("describes 3 ranks but -n is 4"), std::string::npos) << misfit.err;
  EXPECT_EQ(misfit.out, "");
}

TEST(LauncherTest, PrefixesWholeLinesOfEveryRank) {
  const int kRanks = 3, kLines = 40, kLineBytes = 5000;
  LauncherResult r = run_launcher({"-n", std::to_string(kRanks), "--", kProbe, "--lines", std::to_string(kLines),
                                   "--line-bytes", std::to_string(kLineBytes)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (auto [text, stream] : {std::pair{r.out, "out"}, std::pair{r.err, "err"}}) {
    std::regex line_re(std::string(R"(^\[(\d+)\] r(\d+) )") + stream + R"( i(\d+) x+$)");
    std::vector<std::vector<int>> seen(kRanks);
    std::vector<int> tails(kRanks, 0);
    for (const std::string& line : lines_of(text)) {
      std::smatch m;
      if (std::regex_match(line, m, line_re)) {
        EXPECT_EQ(m[1].str(), m[2].str()) << "line of rank " << m[2] << " tagged [" << m[1] << "]";
        // Prefix "[r] " (4 bytes) plus the rank's own line, which had kLineBytes bytes.
        EXPECT_EQ(line.size(), 4u + kLineBytes) << "a line was cut or mixed with another";
        seen[std::stoi(m[2])].push_back(std::stoi(m[3]));
      } else if (line.rfind("[", 0) == 0 && line.find("] tail-r") != std::string::npos) {
        EXPECT_EQ(line, "[" + line.substr(line.size() - 1) + "] tail-r" + line.substr(line.size() - 1));
        tails[line.back() - '0']++;
      } else if (std::string(stream) == "out") {
        EXPECT_TRUE(std::regex_match(line, std::regex(R"(^\[\d+\] pid=\d+$)")))
            << "unexpected line: " << line.substr(0, 80);
      } else {
        ADD_FAILURE() << "unexpected line on stderr: " << line.substr(0, 80);
      }
    }
    for (int rank = 0; rank < kRanks; ++rank) {
      ASSERT_EQ(seen[rank].size(), static_cast<size_t>(kLines)) << stream << " of rank " << rank;
      for (int i = 0; i < kLines; ++i) EXPECT_EQ(seen[rank][i], i) << "lines of one rank stay in order";
      EXPECT_EQ(tails[rank], 1) << "the unterminated last line of rank " << rank << " on " << stream;
    }
  }
}

TEST(LauncherTest, CutsOverlongLinesIntoPieces) {
  const size_t kPiece = 64 * 1024;  // sy-run's documented line limit
  const size_t kLineBytes = kPiece + 1000;
  LauncherResult r =
      run_launcher({"-n", "1", "--", kProbe, "--lines", "1", "--line-bytes", std::to_string(kLineBytes)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> lines;
  for (const std::string& line : lines_of(r.out)) {
    if (line.find("pid=") == std::string::npos) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 3u) << "two pieces of the long line and the tail";
  EXPECT_EQ(lines[0].size(), 4 + kPiece);
  EXPECT_EQ(lines[1].size(), 4 + kLineBytes - kPiece);
  EXPECT_EQ(lines[0].rfind("[0] r0 out i0 x", 0), 0u);
  EXPECT_EQ(lines[1], "[0] " + std::string(kLineBytes - kPiece, 'x'));
  EXPECT_EQ(lines[2], "[0] tail-r0");

  // A line of exactly the limit stays one line (no empty piece after it).
  LauncherResult exact =
      run_launcher({"-n", "1", "--", kProbe, "--lines", "1", "--line-bytes", std::to_string(kPiece)});
  ASSERT_EQ(exact.exit_code, 0) << exact.err;
  std::vector<std::string> exact_lines = lines_of(exact.out);
  ASSERT_EQ(exact_lines.size(), 3u) << "pid, the line, the tail";
  EXPECT_EQ(exact_lines[1].size(), 4 + kPiece);
  EXPECT_EQ(exact_lines[2], "[0] tail-r0");
}

TEST(LauncherTest, BareOutputWithNoTagOutput) {
  LauncherResult r = run_launcher({"-n", "2", "--notag-output", "--", kProbe});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& line : lines_of(r.out)) {
    EXPECT_TRUE(std::regex_match(line, std::regex(R"(pid=\d+)"))) << line;
  }
  EXPECT_EQ(lines_of(r.out).size(), 2u);
}

TEST(LauncherTest, CrashingRankStopsTheJob) {
  SyncDir sync;
  LauncherResult r = run_launcher(
      {"-n", "3", "--", kProbe, "--sync-dir", sync.path(), "--spawn-child", "--crash-rank", "1", "--sleep", "60"});
  pid_t crashed = reported_pid(r.out, 1);
  ASSERT_GT(crashed, 0) << r.out;
  EXPECT_EQ(r.exit_code, 128 + SIGSEGV);
  EXPECT_NE(r.err.find("rank 1 (pid " + std::to_string(crashed) + ") killed by signal 11 (Segmentation fault)"),
            std::string::npos)
      << r.err;
  EXPECT_LT(r.seconds, 5.0) << "sy-run must exit within 5 s of the first death";
  expect_no_leftovers(r, 6);
}

TEST(LauncherTest, FailingRankStatusBecomesTheExitCode) {
  SyncDir sync;
  LauncherResult r = run_launcher(
      {"-n", "2", "--", kProbe, "--sync-dir", sync.path(), "--exit-rank", "0", "--exit-code", "3", "--sleep", "60"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("rank 0 (pid " + std::to_string(reported_pid(r.out, 0)) + ") exited with status 3"),
            std::string::npos)
      << r.err;
  EXPECT_LT(r.seconds, 5.0);
  expect_no_leftovers(r, 2);
}

TEST(LauncherTest, HungJobEndsAtTimeout) {
  SyncDir sync;
  LauncherResult r = run_launcher(
      {"-n", "2", "--timeout", "2", "--", kProbe, "--sync-dir", sync.path(), "--spawn-child", "--sleep", "60"});
  EXPECT_EQ(r.exit_code, 124);
  std::string expected = "job timed out after 2 s; ranks still running: 0 (pid " +
                         std::to_string(reported_pid(r.out, 0)) + "), 1 (pid " +
                         std::to_string(reported_pid(r.out, 1)) + ")";
  EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
  EXPECT_GE(r.seconds, 2.0);
  EXPECT_LT(r.seconds, 7.0) << "ranks that die on SIGTERM end the job at once";
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, RankIgnoringSigtermIsKilledAfterGrace) {
  SyncDir sync;
  LauncherResult r =
      run_launcher({"-n", "2", "--grace", "1", "--", kProbe, "--sync-dir", sync.path(), "--ignore-term-rank", "1",
                    "--spawn-child", "--exit-rank", "0", "--exit-code", "5", "--sleep", "60"});
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_NE(r.err.find("rank 1 (pid " + std::to_string(reported_pid(r.out, 1)) +
                       ") still running 1 s after SIGTERM; sending SIGKILL"),
            std::string::npos)
      << r.err;
  EXPECT_GE(r.seconds, 1.0) << "SIGKILL came before the grace period ended";
  EXPECT_LT(r.seconds, 5.0);
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, ChildrenOutlivingTheirRanksAreStopped) {
  // Every rank exits 0 at once, leaving a child that sleeps forever.
  LauncherResult r = run_launcher({"-n", "2", "--", kProbe, "--spawn-child"});
  EXPECT_EQ(r.exit_code, 0) << "the ranks themselves succeeded";
  EXPECT_NE(r.err.find("processes started by the ranks outlived them; stopping them"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 5.0);
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, InterruptStopsAllRanks) {
  LauncherProcess job({"-n", "2", "--", kProbe, "--spawn-child", "--sleep", "60"});
  ASSERT_TRUE(job.read_until(
      [](const std::string& out, const std::string&) { return numbers_after(out, "child=").size() == 2; },
      seconds(10)));
  job.send_signal(SIGINT);
  LauncherResult r = job.wait(seconds(10));
  EXPECT_EQ(r.exit_code, 128 + SIGINT);
  EXPECT_NE(r.err.find("received SIGINT; stopping 2 ranks"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 15.0);
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, KilledLauncherTakesItsRanksAlong) {
  LauncherProcess job({"-n", "2", "--", kProbe, "--spawn-child", "--sleep", "60"});
  ASSERT_TRUE(job.read_until(
      [](const std::string& out, const std::string&) { return numbers_after(out, "child=").size() == 2; },
      seconds(10)));
  job.send_signal(SIGKILL);
  LauncherResult r = job.wait(seconds(5));
  EXPECT_EQ(r.exit_code, 128 + SIGKILL);
  // Ranks die by their parent-death signal, their children by sy-run's orphan guard.
  expect_no_leftovers(r, 4);
}

TEST(LauncherTest, KilledLauncherRanksDieByParentDeathSignalAlone) {
  // Without the orphan guard only PR_SET_PDEATHSIG is left: the ranks must still die.
  LauncherProcess job({"-n", "2", "--", kProbe, "--spawn-child", "--sleep", "60"},
                      {{"SWITCHYARD_RUN_ORPHAN_GUARD", "0"}});
  ASSERT_TRUE(job.read_until(
      [](const std::string& out, const std::string&) { return numbers_after(out, "child=").size() == 2; },
      seconds(10)));
  job.send_signal(SIGKILL);
  LauncherResult r = job.wait(seconds(5));
  std::vector<pid_t> ranks = numbers_after(r.out, "pid=");
  std::vector<pid_t> children = numbers_after(r.out, "child=");
  ASSERT_EQ(ranks.size(), 2u);
  for (pid_t pid : ranks) EXPECT_TRUE(process_gone(pid, seconds(3))) << "rank " << pid << " outlived sy-run";
  // The ranks' children survive here, which shows that in KilledLauncherTakesItsRanksAlong
  // it is the guard that ends them. Clean up by hand.
  for (pid_t pid : children) {
    EXPECT_FALSE(process_gone(pid, std::chrono::milliseconds(0)));
    ::kill(pid, SIGKILL);
    EXPECT_TRUE(process_gone(pid, seconds(3)));
  }
}

TEST(LauncherTest, MissingProgramCannotStart) {
  LauncherResult r = run_launcher({"-n", "2", "--", "/nonexistent/sy-program"});
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("cannot start rank 0: /nonexistent/sy-program: No such file or directory"), std::string::npos)
      << r.err;
}

struct BadArgs {
  std::string name;  // test name suffix
  std::vector<std::string> args;
  std::string message;
};

void PrintTo(const BadArgs& bad, std::ostream* os) {
  *os << bad.name;
}

class LauncherArgsTest : public ::testing::TestWithParam<BadArgs> {};

TEST_P(LauncherArgsTest, RejectsWithUsageError) {
  LauncherResult r = run_launcher(GetParam().args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("sy-run: " + GetParam().message), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "") << "nothing may run";
}

INSTANTIATE_TEST_SUITE_P(
    BadArguments, LauncherArgsTest,
    ::testing::Values(
        BadArgs{"ZeroRanks", {"-n", "0", "--", "true"}, "-n must be between 1 and 1024, got 0"},
        BadArgs{"UnknownFlag", {"--bogus", "-n", "2", "--", "true"}, "unknown flag '--bogus'"},
        BadArgs{"NonNumericRanks", {"-n", "two", "--", "true"}, "bad value 'two' for flag '-n'"},
        BadArgs{"NoProgram", {"-n", "2"}, "no program to run"},
        BadArgs{"UnevenNodes", {"-n", "4", "--nodes", "3", "--", "true"}, "-n 4 ranks cannot be split evenly"},
        BadArgs{"NegativeGrace", {"-n", "2", "--grace", "-1", "--", "true"}, "--grace must be >= 0"},
        BadArgs{"MissingRankMap", {"-n", "2", "--rank-map", "/nonexistent.json", "--", "true"}, "--rank-map: "},
        BadArgs{"NodesWithRankMap",
                {"-n", "2", "--nodes", "2", "--rank-map", "x.json", "--", "true"},
                "--nodes and --rank-map cannot be combined"},
        BadArgs{"NodeRankOutOfRange",
                {"-n", "2", "--nnodes", "2", "--node-rank", "2", "--master", "h:1", "--token", "t", "--", "true"},
                "--node-rank must be between 0 and --nnodes - 1 (1), got 2"},
        BadArgs{"MasterWithoutPort",
                {"-n", "2", "--nnodes", "2", "--master", "host", "--token", "t", "--", "true"},
                "--master must be ADDR:PORT, got 'host'"}),
    [](const ::testing::TestParamInfo<BadArgs>& info) { return info.param.name; });

}  // namespace
}  // namespace switchyard::run::testing
