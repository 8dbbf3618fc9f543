// Tests of the UCX transport on its own: forked ranks that all play different nodes, a
// directory-backed Store, UCX over tcp on loopback. Each child process checks its own
// results and reports through its exit status and stderr; the parent enforces a hard
// timeout. The reference for every byte is a hash of (sender, receiver, message, offset)
// computed independently on both sides.
#include "transport/ucx/ucx_transport.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "switchyard/common/error.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
// UCX's memory hooks (UCM, configured from the environment when libucm loads) crash under
// the sanitizers' interceptors: restart the test once with UCX_MEM_EVENTS=no.
[[maybe_unused]] static const bool kUcmHooksOff = [] {
  if (std::getenv("UCX_MEM_EVENTS") != nullptr) return true;
  setenv("UCX_MEM_EVENTS", "no", 1);
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv("/proc/self/exe", argv.data());
  return false;  // exec failed: run as is
}();
#endif

namespace switchyard::comm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A Store in a directory: one file per key ('/' in keys becomes '%'), written atomically
// by rename.
class DirStore : public Store {
 public:
  explicit DirStore(fs::path dir) : dir_(std::move(dir)) {}
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    fs::path tmp = path(key + ".tmp." + std::to_string(getpid()));
    {
      std::ofstream out(tmp, std::ios::binary);
      out.write(reinterpret_cast<const char*>(value.data()), static_cast<std::streamsize>(value.size()));
    }
    fs::rename(tmp, path(key));
  }
  std::vector<uint8_t> get(const std::string& key, milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    while (!check(key)) {
      if (Clock::now() > deadline) SY_THROW(Timeout, "DirStore: key " << key << " not set");
      std::this_thread::sleep_for(milliseconds(2));
    }
    std::ifstream in(path(key), std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
  }
  int64_t add(const std::string& key, int64_t delta) override {
    int fd = ::open((dir_ / "lock").c_str(), O_CREAT | O_RDWR, 0600);
    ::flock(fd, LOCK_EX);
    int64_t value = 0;
    if (check(key)) {
      auto bytes = get(key, milliseconds(0));
      value = std::stoll(std::string(bytes.begin(), bytes.end()));
    }
    value += delta;
    std::string text = std::to_string(value);
    set(key, std::vector<uint8_t>(text.begin(), text.end()));
    ::flock(fd, LOCK_UN);
    ::close(fd);
    return value;
  }
  bool check(const std::string& key) override { return fs::exists(path(key)); }

 private:
  fs::path path(std::string key) const {
    for (char& c : key) {
      if (c == '/') c = '%';
    }
    return dir_ / key;
  }

  fs::path dir_;
};

// A fresh directory for one test's store.
fs::path make_store_dir() {
  std::string pattern = (fs::temp_directory_path() / "sy-ucx-test-XXXXXX").string();
  char* dir = mkdtemp(pattern.data());
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  return fs::path(dir);
}

// Result of one forked rank: exit code, or -signal when it was killed.
struct RankResult {
  int status = 0;
};

// Forks `n` ranks running fn(rank) and waits up to `timeout` for all of them. A rank
// passes by returning; an exception or a failed check is printed and exits 1. Ranks still
// running at the timeout are killed and reported as -SIGKILL.
std::vector<RankResult> run_ranks(int n, milliseconds timeout, const std::function<void(int)>& fn) {
  std::vector<pid_t> pids;
  for (int rank = 0; rank < n; ++rank) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("UCX_NET_DEVICES", "lo", 0);  // keep the test's tcp traffic on loopback
      int code = 0;
      try {
        fn(rank);
      } catch (const std::exception& e) {
        std::cerr << "rank " << rank << ": " << e.what() << "\n";
        code = 1;
      }
      std::cerr.flush();
      _exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<RankResult> results(n);
  std::vector<bool> reaped(n, false);
  const auto deadline = Clock::now() + timeout;
  int left = n;
  while (left > 0) {
    for (int r = 0; r < n; ++r) {
      if (reaped[r]) continue;
      int status = 0;
      if (waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        reaped[r] = true;
        --left;
        results[r].status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
    }
    if (left > 0 && Clock::now() > deadline) {
      for (int r = 0; r < n; ++r) {
        if (!reaped[r]) {
          kill(pids[r], SIGKILL);
          waitpid(pids[r], nullptr, 0);
          results[r].status = -SIGKILL;
          std::cerr << "rank " << r << " timed out\n";
        }
      }
      break;
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  return results;
}

// Fails inside a child rank (the parent sees exit status 1).
#define RANK_CHECK(cond, stream_expr) \
  do { \
    if (!(cond)) SY_THROW(InternalError, "check failed: " #cond ": " << stream_expr); \
  } while (0)

std::vector<int> all_but(int rank, int n) {
  std::vector<int> peers;
  for (int r = 0; r < n; ++r) {
    if (r != rank) peers.push_back(r);
  }
  return peers;
}

// Byte `offset` of message `index` from `src` to `dst`.
uint8_t pattern_byte(int src, int dst, int index, size_t offset) {
  uint64_t x = (uint64_t(src) << 48) ^ (uint64_t(dst) << 32) ^ (uint64_t(index) << 24) ^ offset;
  x *= 0x9E3779B97F4A7C15ull;
  return static_cast<uint8_t>(x >> 56);
}

// Size of message `index` from `src` to `dst`: zero, tiny, around the eager/rendezvous
// switch, mid-size and multi-MiB, all uneven; the same on both sides by construction.
size_t message_size(int src, int dst, int index) {
  std::mt19937 gen(static_cast<uint32_t>(src * 7919 + dst * 104729 + index));
  static const size_t kEdges[] = {0, 1, 8185, 8192, 8193};
  switch (index % 5) {
    case 0:
      return kEdges[gen() % 5];
    case 1:
      return gen() % 64;
    case 2:
      return 1000 + gen() % 60000;
    case 3:
      return 100000 + gen() % 400000;
    default:
      return index % 10 == 4 ? (4u << 20) + gen() % 4096 : (1u << 20) + gen() % 4096;
  }
}

// Polls every request to completion (progressing the transport) within `timeout`.
void wait_all(Transport& t, std::vector<std::unique_ptr<TransportRequest>>& reqs, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<bool> done(reqs.size(), false);
  size_t left = reqs.size();
  while (left > 0) {
    bool moved = t.progress();
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!done[i] && reqs[i]->done()) {
        done[i] = true;
        --left;
      }
    }
    if (Clock::now() > deadline) SY_THROW(Timeout, left << " requests still pending");
    if (!moved) sched_yield();
  }
}

// Forces the RMA put path (messages of at least kRmaMinBytes) in this child process; the
// knobs are read when the transport connects.
constexpr size_t kRmaMinBytes = 8192;
void force_rma_path() {
  setenv("SWITCHYARD_COMM_UCX_RMA", "1", 1);
  setenv("SWITCHYARD_COMM_UCX_RMA_MIN_BYTES", std::to_string(kRmaMinBytes).c_str(), 1);
}

// Opens this child process's endpoints in UCX's peer-failure mode, the default before tcp
// endpoints went without it (SWITCHYARD_COMM_UCX_FAILURE_MODE, read when the transport opens).
void force_peer_failure_mode() { setenv("SWITCHYARD_COMM_UCX_FAILURE_MODE", "1", 1); }

// Every rank sends kMessages messages of uneven sizes to every other rank and checks every
// byte it receives; tags repeat so same-(peer, tag) ordering is exercised. rma: with the
// RMA put path forced, every message of at least kRmaMinBytes must have gone by put (the
// counters against a count of the sizes); without it (the default, auto, over tcp) none.
// peer_failure_mode: endpoints in UCX's peer-failure mode (over tcp: rendezvous by active
// messages instead of tcp's put).
void exchange_random_messages(int n, bool rma = false, bool peer_failure_mode = false) {
  constexpr int kMessages = 15;
  fs::path dir = make_store_dir();
  auto results = run_ranks(n, milliseconds(60000), [&](int rank) {
    if (rma) force_rma_path();
    if (peer_failure_mode) force_peer_failure_mode();
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, n, store, "ucx/", all_but(rank, n));
    std::vector<std::vector<uint8_t>> send_bufs, recv_bufs;
    std::vector<std::unique_ptr<TransportRequest>> sends, recvs;
    std::vector<std::pair<int, int>> recv_ids;  // (src, index)
    std::vector<size_t> capacity;
    for (int peer : all_but(rank, n)) {
      for (int i = 0; i < kMessages; ++i) {
        size_t rsize = message_size(peer, rank, i);
        size_t slack = static_cast<size_t>(i % 3) * 17;  // receive buffers may be larger
        recv_bufs.emplace_back(rsize + slack, 0xEE);
        capacity.push_back(rsize + slack);
        recv_ids.emplace_back(peer, i);
        recvs.push_back(transport->irecv(peer, static_cast<uint64_t>(i % 4), recv_bufs.back().data(), rsize + slack));
        size_t ssize = message_size(rank, peer, i);
        send_bufs.emplace_back(ssize);
        for (size_t j = 0; j < ssize; ++j) send_bufs.back()[j] = pattern_byte(rank, peer, i, j);
        sends.push_back(transport->isend(peer, static_cast<uint64_t>(i % 4), send_bufs.back().data(), ssize));
      }
    }
    wait_all(*transport, sends, milliseconds(30000));
    wait_all(*transport, recvs, milliseconds(30000));
    for (size_t k = 0; k < recvs.size(); ++k) {
      auto [src, index] = recv_ids[k];
      size_t expected = message_size(src, rank, index);
      RANK_CHECK(recvs[k]->bytes() == expected,
                 "from rank " << src << " message " << index << ": got " << recvs[k]->bytes() << " bytes");
      for (size_t j = 0; j < expected; ++j) {
        RANK_CHECK(recv_bufs[k][j] == pattern_byte(src, rank, index, j),
                   "from rank " << src << " message " << index << " byte " << j);
      }
      for (size_t j = expected; j < capacity[k]; ++j) {
        RANK_CHECK(recv_bufs[k][j] == 0xEE, "bytes past the message were written, message " << index);
      }
    }
    for (size_t k = 0; k < sends.size(); ++k) RANK_CHECK(sends[k]->bytes() == send_bufs[k].size(), "send size");
    uint64_t large_sent = 0, large_received = 0, large_bytes = 0;
    for (int peer : all_but(rank, n)) {
      for (int i = 0; i < kMessages; ++i) {
        size_t out = message_size(rank, peer, i), in = message_size(peer, rank, i);
        large_sent += out >= kRmaMinBytes;
        large_bytes += out >= kRmaMinBytes ? out : 0;
        large_received += in >= kRmaMinBytes;
      }
    }
    UcxRmaCounters counters = ucx_rma_counters(*transport);
    RANK_CHECK(counters.puts_sent == (rma ? large_sent : 0), "puts sent " << counters.puts_sent);
    RANK_CHECK(counters.bytes_put == (rma ? large_bytes : 0), "bytes put " << counters.bytes_put);
    RANK_CHECK(counters.puts_received == (rma ? large_received : 0), "puts received " << counters.puts_received);
    transport->check_peers();
  });
  fs::remove_all(dir);
  for (int r = 0; r < n; ++r) EXPECT_EQ(results[r].status, 0) << "rank " << r;
}

TEST(UcxTransportTest, RandomSizedMessagesArriveIntactTwoRanks) {
  exchange_random_messages(2);
}
TEST(UcxTransportTest, RandomSizedMessagesArriveIntactThreeRanks) {
  exchange_random_messages(3);
}
TEST(UcxTransportTest, RandomSizedMessagesArriveIntactFourRanks) {
  exchange_random_messages(4);
}
TEST(UcxTransportTest, RandomSizedMessagesArriveIntactInPeerFailureMode) {
  exchange_random_messages(3, false, true);
}
// The RMA put path, forced over tcp (on InfiniBand it is chosen by itself).
TEST(UcxTransportTest, RmaPutPathMessagesArriveIntactTwoRanks) {
  exchange_random_messages(2, true);
}
TEST(UcxTransportTest, RmaPutPathMessagesArriveIntactFourRanks) {
  exchange_random_messages(4, true);
}

// A rank SIGKILLed after connecting is named by PeerFailure on the pending receive and by
// check_peers() of every survivor, within a few seconds; the survivors still talk.
// rma: with the RMA path forced, a large send to the victim posted before it died (waiting
// for its ready-to-receive) fails with PeerFailure too.
// peer_failure_mode: endpoints in UCX's peer-failure mode (the default where the context has
// more than tcp; over tcp the endpoints go without it, and only the error callback tells).
void killed_peer_is_named(bool rma, bool peer_failure_mode = false) {
  constexpr int kRanks = 3;
  constexpr int kVictim = 2;
  fs::path dir = make_store_dir();
  auto results = run_ranks(kRanks, milliseconds(40000), [&](int rank) {
    if (rma) force_rma_path();
    if (peer_failure_mode) force_peer_failure_mode();
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, kRanks, store, "ucx/", all_but(rank, kRanks));
    std::vector<uint8_t> large(4 * kRmaMinBytes, 3);
    std::unique_ptr<TransportRequest> large_send;
    if (rma && rank != kVictim) large_send = transport->isend(kVictim, 4, large.data(), large.size());
    if (rank == kVictim) raise(SIGKILL);
    uint64_t value = 0;
    auto recv = transport->irecv(kVictim, 5, &value, sizeof(value));
    const auto start = Clock::now();
    int failed_peer = -1;
    try {
      while (!recv->done()) {
        transport->progress();
        RANK_CHECK(Clock::now() - start < std::chrono::seconds(10), "no PeerFailure within 10 s");
        sched_yield();
      }
    } catch (const PeerFailure& e) {
      failed_peer = e.peer();
      RANK_CHECK(std::string(e.what()).find("rank 2") != std::string::npos,
                 "message does not name rank 2: " << e.what());
    }
    RANK_CHECK(failed_peer == kVictim, "receive from the dead rank ended with peer " << failed_peer);
    int check_peer = -1;
    try {
      transport->check_peers();
    } catch (const PeerFailure& e) {
      check_peer = e.peer();
    }
    RANK_CHECK(check_peer == kVictim, "check_peers named " << check_peer);
    // A send to the dead rank fails too, naming it.
    auto send = transport->isend(kVictim, 5, &value, sizeof(value));
    bool send_failed = false;
    try {
      while (!send->done() && Clock::now() - start < std::chrono::seconds(10)) transport->progress();
    } catch (const PeerFailure& e) {
      send_failed = e.peer() == kVictim;
    }
    RANK_CHECK(send_failed, "send to the dead rank did not fail with PeerFailure(2)");
    if (large_send) {
      bool large_failed = false;
      try {
        while (!large_send->done() && Clock::now() - start < std::chrono::seconds(10)) transport->progress();
      } catch (const PeerFailure& e) {
        large_failed = e.peer() == kVictim;
      }
      RANK_CHECK(large_failed, "RMA-path send to the dead rank did not fail with PeerFailure(2)");
    }
    // The two survivors still exchange a message.
    int other = 1 - rank;
    uint64_t out = 1000 + rank, in = 0;
    std::vector<std::unique_ptr<TransportRequest>> reqs;
    reqs.push_back(transport->irecv(other, 6, &in, sizeof(in)));
    reqs.push_back(transport->isend(other, 6, &out, sizeof(out)));
    wait_all(*transport, reqs, milliseconds(10000));
    RANK_CHECK(in == uint64_t(1000 + other), "survivor message " << in);
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
  EXPECT_EQ(results[1].status, 0);
  EXPECT_EQ(results[kVictim].status, -SIGKILL);
}

TEST(UcxTransportTest, KilledPeerIsNamedBySurvivors) { killed_peer_is_named(false); }
TEST(UcxTransportTest, KilledPeerIsNamedBySurvivorsOnRmaPath) { killed_peer_is_named(true); }
TEST(UcxTransportTest, KilledPeerIsNamedBySurvivorsInPeerFailureMode) { killed_peer_is_named(false, true); }

// A sender killed while its 64 MiB message is on the wire (the receiver's posted buffer is
// being filled by tcp's rendezvous put) is named by PeerFailure on the receive within a few
// seconds; the receive never reports the partial message as done.
TEST(UcxTransportTest, SenderKilledMidTransferIsNamed) {
  constexpr size_t kBytes = size_t{64} << 20;
  fs::path dir = make_store_dir();
  auto results = run_ranks(2, milliseconds(40000), [&](int rank) {
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, 2, store, "ucx/", {1 - rank});
    std::vector<uint8_t> buf(kBytes, static_cast<uint8_t>(rank));
    if (rank == 0) {
      auto send = transport->isend(1, 3, buf.data(), buf.size());
      // Progress until rank 1 sees bytes landing, then die mid-message.
      const auto start = Clock::now();
      while (!store.check("first-bytes") && Clock::now() - start < std::chrono::seconds(10)) transport->progress();
      raise(SIGKILL);
    }
    auto recv = transport->irecv(0, 3, buf.data(), buf.size());
    const auto start = Clock::now();
    bool flagged = false;
    int failed_peer = -1;
    try {
      while (!recv->done()) {
        transport->progress();
        if (!flagged && buf[1 << 20] == 0) {  // rank 0's bytes (0) passed the first MiB
          flagged = true;
          store.set("first-bytes", {1});
        }
        RANK_CHECK(Clock::now() - start < std::chrono::seconds(15), "no PeerFailure within 15 s");
      }
    } catch (const PeerFailure& e) {
      failed_peer = e.peer();
    }
    RANK_CHECK(failed_peer == 0, "the receive from the killed sender ended with peer " << failed_peer
                                                                                     << " (finished: "
                                                                                     << (failed_peer == -1) << ")");
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, -SIGKILL);
  EXPECT_EQ(results[1].status, 0);
}

// A message larger than the posted receive is an InvalidArgument on the receiver, not a
// silent truncation; a reserved tag is refused; a peer that shut down cleanly is not
// reported by check_peers().
// rma: on the RMA put path the sender learns the receive buffer's size from the
// ready-to-receive, so its send fails with the same InvalidArgument.
void oversized_message_and_clean_shutdown(bool rma) {
  fs::path dir = make_store_dir();
  auto results = run_ranks(2, milliseconds(30000), [&](int rank) {
    if (rma) force_rma_path();
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, 2, store, "ucx/", {1 - rank});
    std::vector<uint8_t> big(20000, 7);
    if (rank == 0) {
      bool tag_rejected = false;
      try {
        transport->isend(1, kMaxUcxTag, big.data(), 1);
      } catch (const InvalidArgument& e) {
        tag_rejected = std::string(e.what()).find("tag " + std::to_string(kMaxUcxTag)) != std::string::npos;
      }
      RANK_CHECK(tag_rejected, "a reserved tag was accepted");
      std::vector<std::unique_ptr<TransportRequest>> reqs;
      reqs.push_back(transport->isend(1, 9, big.data(), big.size()));
      reqs.push_back(transport->isend(1, 10, big.data(), 100));
      if (rma) {
        bool refused = false;
        try {
          std::vector<std::unique_ptr<TransportRequest>> first;
          first.push_back(std::move(reqs[0]));
          wait_all(*transport, first, milliseconds(10000));
        } catch (const InvalidArgument& e) {
          refused = std::string(e.what()).find("message of 20000 bytes is larger than the receive buffer of 1000 "
                                               "bytes") != std::string::npos;
        }
        RANK_CHECK(refused, "the RMA-path send of an oversized message did not fail with InvalidArgument");
        reqs.erase(reqs.begin());
      }
      wait_all(*transport, reqs, milliseconds(10000));
      // Keep progressing (as a live rank does) until rank 1 has closed, then a little more.
      const auto start = Clock::now();
      while (!store.check("rank1-closed")) {
        transport->progress();
        RANK_CHECK(Clock::now() - start < std::chrono::seconds(10), "rank 1 did not close");
      }
      const auto until = Clock::now() + milliseconds(300);
      while (Clock::now() < until) transport->progress();
      transport->check_peers();  // rank 1 said goodbye: not a failure
    } else {
      std::vector<uint8_t> small(1000);
      auto recv = transport->irecv(0, 9, small.data(), small.size());
      bool rejected = false;
      try {
        std::vector<std::unique_ptr<TransportRequest>> one;
        one.push_back(std::move(recv));
        wait_all(*transport, one, milliseconds(10000));
      } catch (const InvalidArgument& e) {
        rejected = std::string(e.what()).find("larger than the receive buffer of 1000 bytes") != std::string::npos;
      }
      RANK_CHECK(rejected, "an oversized message was not rejected with InvalidArgument");
      // The next message on another tag still arrives intact.
      std::vector<std::unique_ptr<TransportRequest>> next;
      next.push_back(transport->irecv(0, 10, small.data(), small.size()));
      wait_all(*transport, next, milliseconds(10000));
      RANK_CHECK(next[0]->bytes() == 100 && small[0] == 7 && small[99] == 7, "second message");
      transport.reset();
      store.set("rank1-closed", {1});
    }
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
  EXPECT_EQ(results[1].status, 0);
}

TEST(UcxTransportTest, OversizedMessageAndCleanShutdown) { oversized_message_and_clean_shutdown(false); }
TEST(UcxTransportTest, OversizedMessageAndCleanShutdownOnRmaPath) { oversized_message_and_clean_shutdown(true); }

// wait_for_event() sleeps until a message arrives (not for its whole timeout), and
// interrupt_wait() from another thread wakes it.
TEST(UcxTransportTest, WaitForEventWakesOnMessageAndInterrupt) {
  fs::path dir = make_store_dir();
  auto results = run_ranks(2, milliseconds(30000), [&](int rank) {
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, 2, store, "ucx/", {1 - rank});
    uint64_t value = 0;
    if (rank == 0) {
      std::this_thread::sleep_for(milliseconds(200));
      value = 42;
      std::vector<std::unique_ptr<TransportRequest>> one;
      one.push_back(transport->isend(1, 3, &value, sizeof(value)));
      wait_all(*transport, one, milliseconds(10000));
      store.get("rank1-done", milliseconds(10000));
      return;
    }
    auto recv = transport->irecv(0, 3, &value, sizeof(value));
    const auto start = Clock::now();
    int waits = 0;
    while (!recv->done()) {
      if (!transport->progress()) {
        transport->wait_for_event(std::chrono::seconds(5));
        ++waits;
      }
      RANK_CHECK(Clock::now() - start < std::chrono::seconds(4), "the message did not wake the wait");
    }
    RANK_CHECK(value == 42, "value " << value);
    // Rank 0 sent after 200 ms: the receiver slept instead of spinning.
    RANK_CHECK(waits < 1000, waits << " waits: wait_for_event did not sleep");
    while (transport->progress()) {
    }
    const auto t0 = Clock::now();
    std::thread waker([&] {
      std::this_thread::sleep_for(milliseconds(100));
      transport->interrupt_wait();
    });
    transport->wait_for_event(std::chrono::seconds(5));
    waker.join();
    RANK_CHECK(Clock::now() - t0 < std::chrono::seconds(3), "interrupt_wait did not wake the wait");
    store.set("rank1-done", {1});
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
  EXPECT_EQ(results[1].status, 0);
}

// A peer that never publishes its address: Timeout naming it after the connect timeout.
TEST(UcxTransportTest, MissingPeerTimesOutNamingIt) {
  fs::path dir = make_store_dir();
  auto results = run_ranks(1, milliseconds(20000), [&](int) {
    setenv("SWITCHYARD_COMM_UCX_CONNECT_TIMEOUT_MS", "300", 1);
    DirStore store(dir);
    bool named = false;
    try {
      make_ucx_transport(0, 3, store, "ucx/", {1, 2});
    } catch (const Timeout& e) {
      named = std::string(e.what()).find("ranks 1,2") != std::string::npos;
      if (!named) std::cerr << e.what() << "\n";
    }
    RANK_CHECK(named, "no Timeout naming ranks 1,2");
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
}

// Registered memory on the RMA path: messages into a registered region reuse its one
// registration and its rkey goes to the sender once; a message into plain memory is
// registered for itself; a region whose owner is gone is dropped and a new one gets its
// own rkey. Counters against the counts of this test; every byte checked.
TEST(UcxTransportTest, RegisteredMemoryIsMappedOnceAndItsRkeySentOnce) {
  constexpr size_t kMessage = 256 << 10;
  constexpr int kIntoRegion = 4;
  fs::path dir = make_store_dir();
  auto results = run_ranks(2, milliseconds(30000), [&](int rank) {
    force_rma_path();
    DirStore store(dir);
    auto transport = make_ucx_transport(rank, 2, store, "ucx/", {1 - rank});
    if (rank == 0) {
      // Round 1: kIntoRegion messages into rank 1's region, one into plain memory; round 2:
      // one into its second region.
      std::vector<std::vector<uint8_t>> bufs;
      std::vector<std::unique_ptr<TransportRequest>> sends;
      for (int i = 0; i < kIntoRegion + 2; ++i) {
        bufs.emplace_back(kMessage);
        for (size_t j = 0; j < kMessage; ++j) bufs.back()[j] = pattern_byte(0, 1, i, j);
        sends.push_back(transport->isend(1, 11, bufs.back().data(), kMessage));
      }
      wait_all(*transport, sends, milliseconds(20000));
      UcxRmaCounters c = ucx_rma_counters(*transport);
      RANK_CHECK(c.puts_sent == kIntoRegion + 2, "puts sent " << c.puts_sent);
      RANK_CHECK(c.rkeys_unpacked == 2, "region rkeys unpacked " << c.rkeys_unpacked << ", want 2");
      store.get("rank1-done", milliseconds(20000));
      return;
    }
    auto check = [&](const uint8_t* got, int index) {
      for (size_t j = 0; j < kMessage; ++j)
        RANK_CHECK(got[j] == pattern_byte(0, 1, index, j), "message " << index << " byte " << j);
    };
    auto region = std::make_shared<std::vector<uint8_t>>(kIntoRegion * kMessage + 4096, 0xEE);
    transport->add_registered_memory(region->data(), region->size(), region);
    std::vector<uint8_t> plain(kMessage, 0xEE);
    std::vector<std::unique_ptr<TransportRequest>> recvs;
    for (int i = 0; i < kIntoRegion; ++i)
      recvs.push_back(transport->irecv(0, 11, region->data() + 4096 + i * kMessage, kMessage));
    recvs.push_back(transport->irecv(0, 11, plain.data(), kMessage));
    wait_all(*transport, recvs, milliseconds(20000));
    for (int i = 0; i < kIntoRegion; ++i) check(region->data() + 4096 + i * kMessage, i);
    check(plain.data(), kIntoRegion);
    UcxRmaCounters c = ucx_rma_counters(*transport);
    RANK_CHECK(c.puts_received == kIntoRegion + 1, "puts received " << c.puts_received);
    RANK_CHECK(c.receive_registrations == 1, "per-message registrations " << c.receive_registrations);
    RANK_CHECK(c.rkeys_sent == 2, "rkeys sent " << c.rkeys_sent << ", want 2 (region once, plain once)");
    // The first region's owner goes away; a second region (possibly at the same address)
    // gets a registration and an rkey of its own.
    region.reset();
    auto second = std::make_shared<std::vector<uint8_t>>(kMessage, 0xEE);
    transport->add_registered_memory(second->data(), second->size(), second);
    std::vector<std::unique_ptr<TransportRequest>> last;
    last.push_back(transport->irecv(0, 11, second->data(), kMessage));
    wait_all(*transport, last, milliseconds(20000));
    check(second->data(), kIntoRegion + 1);
    c = ucx_rma_counters(*transport);
    RANK_CHECK(c.receive_registrations == 1 && c.rkeys_sent == 3,
               "after the second region: registrations " << c.receive_registrations << ", rkeys sent " << c.rkeys_sent);
    store.set("rank1-done", {1});
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
  EXPECT_EQ(results[1].status, 0);
}

// The auto choice of the RMA path reads UCX's endpoint description: the tcp endpoint of this
// machine (UCX 1.13, captured) has no RMA lane; an InfiniBand endpoint has native ones; a
// mix with a tcp RMA lane is not native.
TEST(UcxTransportTest, NativeRmaIsReadFromEndpointInfo) {
  const std::string tcp =
      "#\n# UCP endpoint \n#\n#               peer: <no debug data>\n"
      "#                 lane[0]:  1:tcp/lo.0 md[1]                -> md[1]/tcp/sysdev[255] am am_bw#0 keepalive "
      "wireup\n#\n#                tag_send: 0..<egr/short>..8185..<egr/zcopy>..20553..<rndv>..(inf)\n"
      "#\n#                  rma_bw: mds rndv_rkey_size 9\n#\n";
  const std::string ib =
      "#                 lane[0]:  8:rc_mlx5/mlx5_0:1.0 md[4]      -> md[4]/ib/sysdev[255] rma_bw#0 am am_bw#0\n"
      "#                 lane[1]:  9:rc_mlx5/mlx5_1:1.0 md[5]      -> md[5]/ib/sysdev[255] rma_bw#1 am_bw#1\n"
      "#                 lane[2]:  3:ud_mlx5/mlx5_0:1.0 md[4]      -> md[4]/ib/sysdev[255] keepalive wireup\n"
      "#                  rma_bw: mds [4] [5] rndv_rkey_size 19\n";
  const std::string mixed =
      "#                 lane[0]:  8:rc_mlx5/mlx5_0:1.0 md[4]      -> md[4]/ib/sysdev[255] rma_bw#0 am\n"
      "#                 lane[1]:  1:tcp/eth0.0 md[1]              -> md[1]/tcp/sysdev[255] rma_bw#1 am_bw#0\n";
  std::string lanes;
  EXPECT_FALSE(ucx_ep_info_has_native_rma(tcp, &lanes));
  EXPECT_EQ(lanes, "");
  EXPECT_TRUE(ucx_ep_info_has_native_rma(ib, &lanes));
  EXPECT_EQ(lanes, "8:rc_mlx5/mlx5_0:1.0; 9:rc_mlx5/mlx5_1:1.0; ");
  EXPECT_FALSE(ucx_ep_info_has_native_rma(mixed, nullptr));
  EXPECT_FALSE(ucx_ep_info_has_native_rma("", nullptr));
}

// SWITCHYARD_COMM_UCX_FAILURE_MODE=-1 reads UCX's context description: this machine's default
// context (UCX_TLS=^shm: self and tcp; UCX 1.13, captured) is tcp only; a context with
// InfiniBand or shared memory is not; self alone is not.
TEST(UcxTransportTest, TcpOnlyContextIsReadFromContextInfo) {
  const std::string tcp =
      "#\n# UCP context\n#\n#     component 0  :  self\n#     component 1  :  tcp\n#     component 4  :  ib\n#\n"
      "#            md 0  :  component 0  self \n#            md 1  :  component 1  tcp \n#\n"
      "#      resource 0  :  md 0  dev 0  flags -- self/memory0\n"
      "#      resource 1  :  md 1  dev 1  flags -- tcp/lo\n"
      "#      resource 2  :  md 1  dev 2  flags -- tcp/eth0\n#\n# memory: 1.37MB, file descriptors: 5\n";
  const std::string ib =
      "#      resource 0  :  md 0  dev 0  flags -- self/memory0\n"
      "#      resource 1  :  md 1  dev 1  flags -- tcp/ib0\n"
      "#      resource 2  :  md 2  dev 2  flags -- rc_mlx5/mlx5_0:1\n"
      "#      resource 3  :  md 2  dev 2  flags -- ud_mlx5/mlx5_0:1\n";
  const std::string shm =
      "#      resource 0  :  md 0  dev 0  flags -- self/memory0\n"
      "#      resource 1  :  md 1  dev 1  flags -- posix/memory\n"
      "#      resource 2  :  md 2  dev 2  flags -- tcp/lo\n";
  std::string resources;
  EXPECT_TRUE(ucx_context_info_is_tcp_only(tcp, &resources));
  EXPECT_EQ(resources, "self/memory0 tcp/lo tcp/eth0");
  EXPECT_FALSE(ucx_context_info_is_tcp_only(ib, nullptr));
  EXPECT_FALSE(ucx_context_info_is_tcp_only(shm, nullptr));
  EXPECT_FALSE(ucx_context_info_is_tcp_only("#      resource 0  :  md 0  dev 0  flags -- self/memory0\n", nullptr));
  EXPECT_FALSE(ucx_context_info_is_tcp_only("", nullptr));
}

// Over tcp (this machine) the endpoints get tcp's RMA lane, which UCX's rendezvous uses to put
// a large message straight into the posted buffer; in peer-failure mode they have none (the
// rendezvous then moves through active messages). Both move a 16 MiB message intact.
TEST(UcxTransportTest, TcpEndpointsHaveAnRmaLaneOutsidePeerFailureMode) {
  for (bool peer_failure_mode : {false, true}) {
    fs::path dir = make_store_dir();
    auto results = run_ranks(2, milliseconds(30000), [&](int rank) {
      if (peer_failure_mode) force_peer_failure_mode();
      DirStore store(dir);
      auto transport = make_ucx_transport(rank, 2, store, "ucx/", {1 - rank});
      const std::string info = ucx_endpoint_info(*transport, 1 - rank);
      bool tcp_rma_lane = false;
      std::istringstream in(info);
      for (std::string line; std::getline(in, line);)
        tcp_rma_lane |= line.find("lane[") != std::string::npos && line.find(":tcp/") != std::string::npos &&
                        line.find(" rma_bw#") != std::string::npos;
      RANK_CHECK(tcp_rma_lane == !peer_failure_mode, "peer-failure mode " << peer_failure_mode
                                                                          << ", endpoint:\n" << info);
      const size_t bytes = (size_t{16} << 20) + 5;
      std::vector<uint8_t> out(bytes), got(bytes + 8, 0xEE);
      for (size_t j = 0; j < bytes; ++j) out[j] = pattern_byte(rank, 1 - rank, 0, j);
      std::vector<std::unique_ptr<TransportRequest>> reqs;
      reqs.push_back(transport->irecv(1 - rank, 1, got.data(), got.size()));
      reqs.push_back(transport->isend(1 - rank, 1, out.data(), bytes));
      wait_all(*transport, reqs, milliseconds(20000));
      RANK_CHECK(reqs[0]->bytes() == bytes, "received " << reqs[0]->bytes() << " bytes");
      for (size_t j = 0; j < bytes; ++j)
        RANK_CHECK(got[j] == pattern_byte(1 - rank, rank, 0, j), "byte " << j);
      for (size_t j = bytes; j < got.size(); ++j) RANK_CHECK(got[j] == 0xEE, "byte " << j << " past the message");
    });
    fs::remove_all(dir);
    for (int r = 0; r < 2; ++r) EXPECT_EQ(results[r].status, 0) << "rank " << r << ", mode " << peer_failure_mode;
  }
}

// Bad arguments are InvalidArgument naming the value.
TEST(UcxTransportTest, BadArgumentsAreRejected) {
  fs::path dir = make_store_dir();
  auto results = run_ranks(1, milliseconds(20000), [&](int) {
    DirStore store(dir);
    auto expect_invalid = [](const std::function<void()>& f, const std::string& needle) {
      try {
        f();
      } catch (const InvalidArgument& e) {
        RANK_CHECK(std::string(e.what()).find(needle) != std::string::npos, e.what());
        return;
      }
      RANK_CHECK(false, "no InvalidArgument for " << needle);
    };
    expect_invalid([&] { make_ucx_transport(0, 2, store, "a/", {0}); }, "peer 0");
    expect_invalid([&] { make_ucx_transport(0, 2, store, "a/", {5}); }, "peer 5");
    expect_invalid([&] { make_ucx_transport(3, 2, store, "a/", {}); }, "rank 3");
    auto alone = make_ucx_transport(0, 2, store, "b/", {});
    RANK_CHECK(!alone->can_reach(1), "reaches a rank it did not connect to");
    uint8_t byte = 0;
    expect_invalid([&] { alone->isend(1, 0, &byte, 1); }, "peer 1");
    expect_invalid([&] { alone->irecv(1, kMaxUcxTag, &byte, 1); }, "peer 1");
  });
  fs::remove_all(dir);
  EXPECT_EQ(results[0].status, 0);
}

}  // namespace
}  // namespace switchyard::comm
