// PeerWindow over POSIX shared memory: the default PeerExchange::open_window.
//
// Each rank creates one segment (shm_open + ftruncate, so pages are allocated only where
// they are touched), tells the ranks of its node its name and pid with one message each,
// maps theirs, and reports back which mappings worked; a pair uses the window only if
// both sides mapped each other (otherwise both fall back to messages). The segment is
// unlinked once every peer answered, so a crashed job leaves nothing in /dev/shm.
// Peer failure: a peer whose pid no longer exists (kill(pid, 0) == ESRCH) is reported as
// PeerFailure; a peer that is alive but silent is the caller's Timeout.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch {

namespace {

// One mapping of a segment (RAII).
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* base, size_t bytes) : base_(base), bytes_(bytes) {}
  Mapping(Mapping&& o) noexcept : base_(o.base_), bytes_(o.bytes_) { o.base_ = nullptr; }
  Mapping& operator=(Mapping&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~Mapping() {
    if (base_) munmap(base_, bytes_);
  }
  uint8_t* data() const { return static_cast<uint8_t*>(base_); }

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

// Maps the segment `name` of `bytes`; `create` makes it (exclusive). Empty on failure.
Mapping map_segment(const std::string& name, size_t bytes, bool create) {
  const int fd = shm_open(name.c_str(), create ? O_CREAT | O_EXCL | O_RDWR : O_RDWR, 0600);
  if (fd < 0) return {};
  bool ok = true;
  if (create) {
    ok = ftruncate(fd, static_cast<off_t>(bytes)) == 0;
  } else {
    struct stat st {};
    ok = fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) == bytes;
  }
  void* base = ok ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (base == MAP_FAILED) {
    if (create) shm_unlink(name.c_str());
    return {};
  }
  return Mapping(base, bytes);
}

// What a rank tells each peer of its node.
struct Announce {
  int32_t ok = 0;
  int32_t pid = 0;
  char name[112] = {};
};

class ShmWindow final : public PeerWindow {
 public:
  ShmWindow(int me, std::vector<Mapping> maps, std::vector<int32_t> pids)
      : me_(me), maps_(std::move(maps)), pids_(std::move(pids)) {}
  uint8_t* at(int rank) override { return maps_[rank].data(); }
  void check_peer(int rank) override {
    if (rank == me_ || pids_[rank] <= 0) return;
    if (kill(pids_[rank], 0) != 0 && errno == ESRCH)
      throw PeerFailure(rank, "dispatch: rank " + std::to_string(me_) + ": peer rank " + std::to_string(rank) +
                                  " (pid " + std::to_string(pids_[rank]) + ") exited",
                        __FILE__, __LINE__);
  }

 private:
  int me_;
  std::vector<Mapping> maps_;  // [R], empty where not mapped
  std::vector<int32_t> pids_;
};

std::atomic<uint64_t> g_segment_counter{0};

}  // namespace

std::unique_ptr<PeerWindow> PeerExchange::open_window(size_t bytes) {
  if (bytes == 0) SY_THROW(InvalidArgument, "open_window: bytes must be > 0");
  const int R = size(), me = rank();
  const topology::RankMap& map = rank_map();
  std::vector<int> peers;
  for (int p = 0; p < R; ++p)
    if (p != me && map.same_node(me, p)) peers.push_back(p);
  const std::string name = "/sy-dispatch-" + std::to_string(getpid()) + "-" + std::to_string(me) + "-" +
                           std::to_string(g_segment_counter.fetch_add(1));
  std::vector<Mapping> maps(R);
  maps[me] = map_segment(name, bytes, true);
  const bool shared = maps[me].data() != nullptr;
  if (!shared) {
    // This rank still takes part in the protocol (peers wait for its messages); it keeps a
    // private buffer as its own window and every pair falls back to messages.
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) SY_THROW(IoError, "open_window: rank " << me << ": cannot map " << bytes << " bytes");
    maps[me] = Mapping(base, bytes);
    SY_WARN("dispatch", "rank " << me << ": shared memory segment " << name << " failed (" << std::strerror(errno)
                                << "); low-latency peers use messages");
  }
  struct Unlink {
    std::string n;
    bool on;
    ~Unlink() {
      if (on) shm_unlink(n.c_str());
    }
  } unlink{name, shared};

  Announce mine;
  mine.ok = shared ? 1 : 0;
  mine.pid = static_cast<int32_t>(getpid());
  std::strncpy(mine.name, name.c_str(), sizeof(mine.name) - 1);
  std::vector<Announce> theirs(R);
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (int p : peers) {
    sends.push_back({p, &mine, sizeof(mine)});
    recvs.push_back({p, &theirs[p], sizeof(Announce)});
  }
  exchange(sends, recvs, kWindowTag);

  std::vector<int32_t> mapped(R, 0), mapped_me(R, 0), pids(R, 0);
  for (int p : peers) {
    theirs[p].name[sizeof(theirs[p].name) - 1] = '\0';
    pids[p] = theirs[p].pid;
    if (shared && theirs[p].ok) maps[p] = map_segment(theirs[p].name, bytes, false);
    mapped[p] = maps[p].data() ? 1 : 0;
  }
  sends.clear();
  recvs.clear();
  for (int p : peers) {
    sends.push_back({p, &mapped[p], sizeof(int32_t)});
    recvs.push_back({p, &mapped_me[p], sizeof(int32_t)});
  }
  exchange(sends, recvs, kWindowTag);
  for (int p : peers)
    if (!(mapped[p] && mapped_me[p])) maps[p] = Mapping();
  return std::make_unique<ShmWindow>(me, std::move(maps), std::move(pids));
}

}  // namespace switchyard::dispatch
