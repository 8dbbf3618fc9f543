// Shared-memory transport (see shm_transport.h for the protocol).
#include "transport/shm/shm_transport.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <deque>
#include <map>
#include <unordered_map>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"

namespace switchyard::comm::detail {
namespace {

const Param<bool> kUseCma("COMM_SHM_CMA", true, "bool",
                          "large shared-memory messages use cross-memory attach (else chunks through the ring)");
const Param<int64_t> kHeartbeatTimeoutMs("COMM_HEARTBEAT_TIMEOUT_MS", 10000, "milliseconds",
                                         "a local peer whose progress thread shows no heartbeat for this long "
                                         "is reported as failed (0: off)");
const Param<int64_t> kShmSlots("COMM_SHM_SLOTS", 32, "slots", "slots per shared-memory ring (each 8 KiB)");

constexpr uint64_t kMagic = 0x53595348'4d303031ull;  // "SYSHM001"
constexpr size_t kSlotBytes = 8192;
constexpr size_t kSlotHeaderBytes = 64;
constexpr size_t kEagerMax = kSlotBytes - kSlotHeaderBytes;

// kChunk: one piece of a large message copied through the ring when cross-memory attach
// is not permitted (bytes = message size, addr = offset, cookie = piece length).
enum SlotKind : uint32_t { kEager = 1, kRts = 2, kRtsRegion = 3, kFin = 4, kChunk = 5 };
constexpr int kMaxLocalRanks = 256;
enum RunState : uint32_t { kRunning = 0, kClosed = 1, kAborted = 2 };
enum FinStatus : int64_t { kFinOk = 0, kFinTruncated = 1, kFinCopyFailed = 2 };

struct alignas(64) SegmentHeader {
  uint64_t magic;
  int32_t pid;
  int32_t num_local;
  uint64_t slots;
  alignas(64) std::atomic<uint32_t> doorbell;
  std::atomic<uint32_t> sleepers;
  alignas(64) std::atomic<uint64_t> heartbeat;  // bumped by the owner's progress thread
  alignas(64) std::atomic<uint32_t> state;
  uint64_t probe;                  // magic value at a known address, read by peers' CMA probe
  uint64_t probe_addr;             // address of `probe` in the owner's address space
  uint8_t can_read[kMaxLocalRanks];  // can_read[i]: the owner can CMA-read local rank i
};

struct Slot {
  std::atomic<uint32_t> full;
  uint32_t kind;
  uint64_t tag;
  uint64_t bytes;
  uint64_t addr;    // sender's address (rts) or offset in the region (rts region)
  uint64_t cookie;  // rts/fin: the sender's request id
  int64_t status;   // fin
  uint8_t pad[kSlotHeaderBytes - 48];
  uint8_t data[kEagerMax];
};
static_assert(sizeof(Slot) == kSlotBytes);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

size_t segment_bytes(int num_local, size_t slots) {
  return sizeof(SegmentHeader) + static_cast<size_t>(num_local) * slots * sizeof(Slot);
}

long futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const timespec* ts) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

void ring_doorbell(SegmentHeader* h) {
  h->doorbell.fetch_add(1, std::memory_order_seq_cst);
  if (h->sleepers.load(std::memory_order_seq_cst) > 0) futex(&h->doorbell, FUTEX_WAKE, INT_MAX, nullptr);
}

// The data path's doorbell (a slot written or freed): only a sleeping owner needs it, so
// with nobody asleep it is one plain load of a line the owner rarely writes, instead of a
// locked add that waits for the slot stores to reach the peer (measured: 11 % of a 2-rank
// 16-byte all_to_all). No fence orders the slot store before the `sleepers` load, so an
// owner falling asleep at that instant can miss this one: it then sleeps out its bounded
// wait (wait_for_event is always called with SWITCHYARD_COMM_SLEEP_US or less) and polls
// again. Wake-ups that must not be late (interrupt_wait, abort, close) use ring_doorbell.
void ring_doorbell_if_sleeping(SegmentHeader* h) {
  if (h->sleepers.load(std::memory_order_relaxed) > 0) ring_doorbell(h);
}

// A mapped shared-memory object (RAII).
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* p, size_t n) : p_(p), n_(n) {}
  Mapping(Mapping&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  Mapping& operator=(Mapping&& o) noexcept {
    reset();
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    return *this;
  }
  ~Mapping() { reset(); }
  void reset() {
    if (p_) ::munmap(p_, n_);
    p_ = nullptr;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(p_); }
  size_t size() const { return n_; }
  // Gives up ownership (the caller unmaps).
  void* release() {
    void* p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

Mapping map_shm(const std::string& name, bool create, size_t bytes) {
  int fd = ::shm_open(name.c_str(), create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR, 0600);
  if (fd < 0) SY_THROW(IoError, "shm: shm_open " << name << ": " << errno_text(errno));
  if (create && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    int e = errno;
    ::close(fd);
    ::shm_unlink(name.c_str());
    SY_THROW(IoError, "shm: ftruncate " << name << " to " << bytes << " bytes: " << errno_text(e));
  }
  if (!create) {
    struct stat st {};
    ::fstat(fd, &st);
    bytes = static_cast<size_t>(st.st_size);
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    if (create) ::shm_unlink(name.c_str());
    SY_THROW(IoError, "shm: mmap " << name << " (" << bytes << " bytes): " << errno_text(e));
  }
  return Mapping(p, bytes);
}

struct Request {
  bool is_send = false;
  int peer = 0;
  uint64_t tag = 0;
  void* buf = nullptr;
  size_t cap = 0;
  size_t bytes = 0;
  bool done = false;
  std::exception_ptr error;
};

class Handle : public TransportRequest {
 public:
  explicit Handle(std::shared_ptr<Request> r) : r_(std::move(r)) {}
  bool done() override {
    if (r_->error) std::rethrow_exception(r_->error);
    return r_->done;
  }
  size_t bytes() const override { return r_->bytes; }

 private:
  std::shared_ptr<Request> r_;
};

struct Outgoing {
  uint32_t kind = 0;
  uint64_t tag = 0;
  uint64_t bytes = 0;
  uint64_t addr = 0;
  uint64_t cookie = 0;
  int64_t status = 0;
  const void* data = nullptr;  // eager payload
  std::string region;          // rts region: the region's name
  std::shared_ptr<Request> req;
};

struct Unexpected {
  uint32_t kind = 0;
  uint64_t tag = 0;
  uint64_t bytes = 0;
  uint64_t addr = 0;
  uint64_t cookie = 0;
  std::string region;
  std::vector<uint8_t> data;
};

struct Peer {
  int rank = -1;
  int local = -1;
  pid_t pid = 0;
  int pidfd = -1;
  Mapping mapping;  // the peer's segment (empty for self: use own)
  SegmentHeader* header = nullptr;
  Slot* out_ring = nullptr;  // in the peer's segment: slots I write
  Slot* in_ring = nullptr;   // in my segment: slots the peer writes
  uint64_t out_head = 0;
  uint64_t in_head = 0;
  std::deque<Outgoing> outq;
  std::deque<std::shared_ptr<Request>> posted;
  std::deque<Unexpected> unexpected;
  bool gone = false;  // closed cleanly and exited
  uint64_t last_beat = 0;  // the peer's heartbeat when it last changed, seen at beat_seen
  std::chrono::steady_clock::time_point beat_seen{};
  bool peer_reads_me = true;  // the peer may CMA-read this rank (else send chunks)
  // The chunked message being received from this peer (into a request or unexpected).
  std::shared_ptr<Request> chunk_req;
  bool chunk_discard = false;
  std::unique_ptr<Unexpected> chunk_unexpected;
};

class ShmTransportImpl : public ShmTransport {
 public:
  ShmTransportImpl(int rank, const std::vector<int>& local_ranks, Store& store, const std::string& key_prefix,
                   const std::string& job_uid, std::chrono::milliseconds timeout)
      : rank_(rank), slots_(static_cast<size_t>(std::max<int64_t>(2, kShmSlots.get()))) {
    name_prefix_ = "/sy-" + job_uid + "-";
    int n = static_cast<int>(local_ranks.size());
    for (int i = 0; i < n; ++i)
      if (local_ranks[i] == rank) me_ = i;
    SY_CHECK(me_ >= 0);
    own_name_ = name_prefix_ + std::to_string(rank);
    own_ = map_shm(own_name_, true, segment_bytes(n, slots_));
    linked_ = true;
    own_header_ = new (own_.data()) SegmentHeader();
    own_header_->magic = kMagic;
    own_header_->pid = ::getpid();
    own_header_->num_local = n;
    own_header_->slots = slots_;
    own_header_->probe = kMagic;
    own_header_->probe_addr = reinterpret_cast<uint64_t>(&own_header_->probe);
    SY_REQUIRE(n <= kMaxLocalRanks, "shm transport: " << n << " ranks on one node (at most " << kMaxLocalRanks << ")");
    try {
      connect(local_ranks, store, key_prefix, timeout);
    } catch (...) {
      unlink_own();
      throw;
    }
  }

  ~ShmTransportImpl() override {
    announce_closed();
    for (auto& p : peers_) {
      if (p.header && p.local != me_) ring_doorbell(p.header);
      if (p.pidfd >= 0) ::close(p.pidfd);
    }
    unlink_own();
  }

  const char* name() const override { return "shm"; }
  bool can_reach(int peer) const override { return index_.count(peer) > 0; }
  std::string region_prefix() const override { return name_prefix_ + std::to_string(rank_) + "-r"; }

  void add_region(const std::shared_ptr<SharedRegion>& region) override {
    regions_[reinterpret_cast<uintptr_t>(region->base())] = region;
  }

  std::unique_ptr<TransportRequest> isend(int peer, uint64_t tag, const void* buf, size_t bytes) override {
    Peer& p = peer_of(peer);
    auto r = std::make_shared<Request>();
    r->is_send = true;
    r->peer = peer;
    r->tag = tag;
    r->bytes = bytes;
    if (p.gone) {
      r->error = gone_error(p, "send");
    } else {
      Outgoing o;
      o.tag = tag;
      o.bytes = bytes;
      o.req = r;
      if (bytes <= kEagerMax) {
        o.kind = kEager;
        o.data = buf;
      } else if (!p.peer_reads_me && !find_region(buf, bytes)) {
        // No cross-memory attach: the message goes through the ring in slot-sized pieces.
        for (size_t off = 0; off < bytes; off += kEagerMax) {
          Outgoing c;
          c.kind = kChunk;
          c.tag = tag;
          c.bytes = bytes;
          c.addr = off;
          c.cookie = std::min(kEagerMax, bytes - off);
          c.data = static_cast<const uint8_t*>(buf) + off;
          if (off + kEagerMax >= bytes) c.req = r;
          p.outq.push_back(std::move(c));
        }
        flush(p);
        return std::make_unique<Handle>(std::move(r));
      } else {
        o.cookie = next_cookie_++;
        o.kind = kRts;
        o.addr = reinterpret_cast<uint64_t>(buf);
        if (auto region = find_region(buf, bytes)) {
          o.kind = kRtsRegion;
          o.region = region->name();
          o.addr = reinterpret_cast<uintptr_t>(buf) - reinterpret_cast<uintptr_t>(region->base());
        }
        rts_waiting_[o.cookie] = r;
      }
      p.outq.push_back(std::move(o));
      flush(p);
    }
    return std::make_unique<Handle>(std::move(r));
  }

  std::unique_ptr<TransportRequest> irecv(int peer, uint64_t tag, void* buf, size_t bytes) override {
    Peer& p = peer_of(peer);
    auto r = std::make_shared<Request>();
    r->peer = peer;
    r->tag = tag;
    r->buf = buf;
    r->cap = bytes;
    drain(p);
    for (auto it = p.unexpected.begin(); it != p.unexpected.end(); ++it) {
      if (it->tag != tag) continue;
      Unexpected u = std::move(*it);
      p.unexpected.erase(it);
      deliver(p, *r, u.kind, u.bytes, u.addr, u.cookie, u.region, u.data.data());
      return std::make_unique<Handle>(std::move(r));
    }
    if (p.gone)
      r->error = gone_error(p, "receive");
    else
      p.posted.push_back(r);
    return std::make_unique<Handle>(std::move(r));
  }

  bool progress() override {
    bool moved = false;
    for (auto& p : peers_) {
      moved |= flush(p);
      moved |= drain(p);
    }
    return moved;
  }

  void check_peers() override {
    for (auto& p : peers_) {
      if (p.local == me_ || p.gone) continue;
      uint32_t st = p.header->state.load(std::memory_order_acquire);
      if (st == kAborted) throw PeerFailure(p.rank, "rank " + std::to_string(p.rank) + " aborted its communicator", __FILE__, __LINE__);
      if (!exited(p)) {
        if (st == kRunning) check_heartbeat(p);
        continue;
      }
      if (st != kClosed)
        throw PeerFailure(p.rank, peer_text(p) + " died (exited without closing its communicator)", __FILE__, __LINE__);
      drain(p);
      p.gone = true;
      fail_pending(p);
    }
  }

  void wait_for_event(std::chrono::microseconds max_wait) override {
    own_header_->sleepers.fetch_add(1, std::memory_order_seq_cst);
    uint32_t seen = own_header_->doorbell.load(std::memory_order_seq_cst);
    // Data that arrived after the caller's last progress pass but before `seen`: check the
    // next slot of every ring (heads are read through their atomic mirrors: no lock here).
    bool ready = false;
    for (size_t i = 0; i < peers_.size(); ++i) {
      uint64_t head = in_head_mirror_[i].load(std::memory_order_relaxed);
      if (peers_[i].in_ring[head % slots_].full.load(std::memory_order_acquire)) ready = true;
    }
    if (!ready) {
      timespec ts{static_cast<time_t>(max_wait.count() / 1000000), static_cast<long>(max_wait.count() % 1000000) * 1000};
      futex(&own_header_->doorbell, FUTEX_WAIT, seen, &ts);
    }
    own_header_->sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }

  size_t inline_max() const override { return kEagerMax; }

  bool send_inline(int peer, uint64_t tag, const void* buf, size_t bytes) override {
    Peer& p = peer_of(peer);
    if (p.gone) std::rethrow_exception(gone_error(p, "send"));
    if (bytes > kEagerMax || !p.outq.empty()) return false;
    Slot& s = p.out_ring[p.out_head % slots_];
    if (s.full.load(std::memory_order_acquire)) return false;
    s.kind = kEager;
    s.tag = tag;
    s.bytes = bytes;
    if (bytes) std::memcpy(s.data, buf, bytes);
    s.full.store(1, std::memory_order_release);
    ++p.out_head;
    ring_doorbell_if_sleeping(p.header);
    return true;
  }

  int64_t recv_inline(int peer, uint64_t tag, void* buf, size_t cap) override {
    Peer& p = peer_of(peer);
    Request r;
    r.peer = peer;
    r.tag = tag;
    r.buf = buf;
    r.cap = cap;
    for (int pass = 0; pass < 2; ++pass) {
      for (auto it = p.unexpected.begin(); it != p.unexpected.end(); ++it) {
        if (it->tag != tag) continue;
        Unexpected u = std::move(*it);
        p.unexpected.erase(it);
        deliver(p, r, u.kind, u.bytes, u.addr, u.cookie, u.region, u.data.data());
        if (r.error) std::rethrow_exception(r.error);
        return static_cast<int64_t>(r.bytes);
      }
      Slot& s = p.in_ring[p.in_head % slots_];
      if (!s.full.load(std::memory_order_acquire)) return -1;
      if (s.tag == tag && (s.kind == kEager || s.kind == kRts || s.kind == kRtsRegion)) {
        // The message at the head is ours: straight from the slot into buf.
        std::string region = s.kind == kRtsRegion ? std::string(reinterpret_cast<const char*>(s.data)) : "";
        deliver(p, r, s.kind, s.bytes, s.addr, s.cookie, region, s.data);
        s.full.store(0, std::memory_order_release);
        ++p.in_head;
        in_head_mirror_[static_cast<size_t>(p.local)].store(p.in_head, std::memory_order_relaxed);
        if (p.local != me_) ring_doorbell_if_sleeping(p.header);
        if (r.error) std::rethrow_exception(r.error);
        return static_cast<int64_t>(r.bytes);
      }
      drain(p);  // other messages first (to posted receives or the unexpected list)
    }
    if (p.gone) std::rethrow_exception(gone_error(p, "receive"));
    return -1;
  }

  void interrupt_wait() override { ring_doorbell(own_header_); }
  void beat() override { own_header_->heartbeat.fetch_add(1, std::memory_order_relaxed); }
  void announce_closed() override {
    uint32_t running = kRunning;  // an abort stays visible to the peers
    own_header_->state.compare_exchange_strong(running, kClosed, std::memory_order_seq_cst);
  }
  void announce_abort() override {
    own_header_->state.store(kAborted, std::memory_order_seq_cst);
    for (auto& p : peers_)
      if (p.header && p.local != me_) ring_doorbell(p.header);
  }

 private:
  void connect(const std::vector<int>& local_ranks, Store& store, const std::string& prefix,
               std::chrono::milliseconds timeout) {
    int n = static_cast<int>(local_ranks.size());
    store.set(prefix + "shm/ready/" + std::to_string(rank_), {1});
    std::vector<std::string> keys, what;
    for (int r : local_ranks) {
      keys.push_back(prefix + "shm/ready/" + std::to_string(r));
      what.push_back("rank " + std::to_string(r));
    }
    store_get_all(store, keys, what, timeout, "shm transport: local ranks");
    peers_.resize(n);
    in_head_mirror_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      Peer& p = peers_[i];
      p.rank = local_ranks[i];
      p.local = i;
      index_[p.rank] = i;
      uint8_t* base = own_.data();
      if (i != me_) {
        p.mapping = map_shm(name_prefix_ + std::to_string(p.rank), false, 0);
        base = p.mapping.data();
      }
      p.header = reinterpret_cast<SegmentHeader*>(base);
      if (p.mapping.size() && (p.mapping.size() < sizeof(SegmentHeader) || p.header->magic != kMagic ||
                               p.header->num_local != n || p.header->slots != slots_ ||
                               p.mapping.size() < segment_bytes(n, slots_)))
        SY_THROW(InvalidArgument, "shm transport: segment of rank " << p.rank
                                                                    << " does not match (different local size or "
                                                                       "SWITCHYARD_COMM_SHM_SLOTS between ranks?)");
      p.pid = p.header->pid;
      p.out_ring = ring(base, me_);
      p.in_ring = ring(own_.data(), i);
      if (i != me_) p.pidfd = static_cast<int>(syscall(SYS_pidfd_open, p.pid, 0));
    }
    // Which local ranks may this rank read with cross-memory attach? Peers read it from
    // our header (after the barrier below) to choose between CMA and ring chunks.
    for (int i = 0; i < n; ++i) {
      Peer& p = peers_[i];
      bool ok = i == me_;
      if (!ok && kUseCma.get()) {
        uint64_t v = 0;
        iovec local{&v, 8};
        iovec remote{reinterpret_cast<void*>(p.header->probe_addr), 8};
        ok = ::process_vm_readv(p.pid, &local, 1, &remote, 1, 0) == 8 && v == kMagic;
        if (!ok)
          SY_INFO("comm", "shm: cross-memory attach to rank " << p.rank << " unavailable (" << errno_text(errno)
                                                              << "): large messages go through the ring");
      }
      own_header_->can_read[i] = ok ? 1 : 0;
    }
    store.set(prefix + "shm/mapped/" + std::to_string(rank_), {1});
    keys.clear();
    for (int r : local_ranks) keys.push_back(prefix + "shm/mapped/" + std::to_string(r));
    store_get_all(store, keys, what, timeout, "shm transport: mapping segments");
    for (auto& p : peers_) p.peer_reads_me = p.header->can_read[me_] != 0;
    unlink_own();
  }

  Slot* ring(uint8_t* base, int index) const {
    return reinterpret_cast<Slot*>(base + sizeof(SegmentHeader) + static_cast<size_t>(index) * slots_ * sizeof(Slot));
  }

  void unlink_own() {
    if (linked_) ::shm_unlink(own_name_.c_str());
    linked_ = false;
  }

  Peer& peer_of(int rank) {
    auto it = index_.find(rank);
    if (it == index_.end()) SY_THROW(InternalError, "shm transport: rank " << rank << " is not on this node");
    return peers_[it->second];
  }

  std::string peer_text(const Peer& p) const {
    return "rank " + std::to_string(p.rank) + " (pid " + std::to_string(p.pid) + ")";
  }

  std::exception_ptr gone_error(const Peer& p, const char* what) const {
    return std::make_exception_ptr(
        PeerFailure(p.rank, std::string(what) + " needs " + peer_text(p) + ", which has closed its communicator and exited",
                    __FILE__, __LINE__));
  }

  // A running peer whose heartbeat has not moved for the heartbeat timeout is hung or
  // stopped (SIGSTOP, a debugger, swapped out): PeerFailure naming it.
  void check_heartbeat(Peer& p) {
    int64_t limit_ms = kHeartbeatTimeoutMs.get();
    if (limit_ms <= 0) return;
    auto now = std::chrono::steady_clock::now();
    uint64_t beat = p.header->heartbeat.load(std::memory_order_relaxed);
    if (beat != p.last_beat || p.beat_seen == std::chrono::steady_clock::time_point{}) {
      p.last_beat = beat;
      p.beat_seen = now;
      return;
    }
    auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - p.beat_seen).count();
    if (silent > limit_ms)
      throw PeerFailure(p.rank,
                        peer_text(p) + " stopped making progress: no heartbeat for " + std::to_string(silent) +
                            " ms (hung or stopped; SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS=" +
                            std::to_string(limit_ms) + ")",
                        __FILE__, __LINE__);
  }

  bool exited(const Peer& p) const {
    if (p.pidfd >= 0) {
      pollfd pfd{p.pidfd, POLLIN, 0};
      return ::poll(&pfd, 1, 0) > 0;
    }
    return ::kill(p.pid, 0) != 0 && errno == ESRCH;
  }

  void fail_pending(Peer& p) {
    for (auto& r : p.posted) r->error = gone_error(p, "receive");
    p.posted.clear();
    for (auto& o : p.outq)
      if (o.req) o.req->error = gone_error(p, "send");
    p.outq.clear();
    for (auto it = rts_waiting_.begin(); it != rts_waiting_.end();) {
      if (it->second->peer == p.rank) {
        it->second->error = gone_error(p, "send");
        it = rts_waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::shared_ptr<SharedRegion> find_region(const void* buf, size_t bytes) {
    uintptr_t a = reinterpret_cast<uintptr_t>(buf);
    auto it = regions_.upper_bound(a);
    if (it == regions_.begin()) return nullptr;
    --it;
    auto region = it->second.lock();
    if (!region) {
      regions_.erase(it);
      return nullptr;
    }
    if (a + bytes <= it->first + region->bytes()) return region;
    return nullptr;
  }

  // Writes queued messages into the peer's ring while slots are free.
  bool flush(Peer& p) {
    bool moved = false;
    while (!p.outq.empty()) {
      Slot& s = p.out_ring[p.out_head % slots_];
      if (s.full.load(std::memory_order_acquire)) break;
      Outgoing& o = p.outq.front();
      s.kind = o.kind;
      s.tag = o.tag;
      s.bytes = o.bytes;
      s.addr = o.addr;
      s.cookie = o.cookie;
      s.status = o.status;
      if (o.kind == kEager && o.bytes) std::memcpy(s.data, o.data, o.bytes);
      if (o.kind == kChunk) std::memcpy(s.data, o.data, o.cookie);
      if (o.kind == kRtsRegion) std::memcpy(s.data, o.region.c_str(), o.region.size() + 1);
      s.full.store(1, std::memory_order_release);
      ++p.out_head;
      if ((o.kind == kEager || o.kind == kChunk) && o.req) o.req->done = true;
      p.outq.pop_front();
      moved = true;
    }
    if (moved) ring_doorbell_if_sleeping(p.header);
    return moved;
  }

  // Consumes every full slot of the peer's inbound ring.
  bool drain(Peer& p) {
    bool moved = false;
    for (;;) {
      Slot& s = p.in_ring[p.in_head % slots_];
      if (!s.full.load(std::memory_order_acquire)) break;
      if (s.kind == kFin) {
        auto it = rts_waiting_.find(s.cookie);
        if (it != rts_waiting_.end()) {
          auto r = it->second;
          rts_waiting_.erase(it);
          if (s.status == kFinTruncated)
            r->error = std::make_exception_ptr(InvalidArgument(
                "message of " + std::to_string(r->bytes) + " bytes to rank " + std::to_string(p.rank) +
                    " is larger than the receive posted there (sizes differ between ranks?)",
                __FILE__, __LINE__));
          else if (s.status != kFinOk)
            r->error = std::make_exception_ptr(
                IoError("rank " + std::to_string(p.rank) + " could not read this rank's send buffer", __FILE__, __LINE__));
          r->done = true;
        }
      } else if (s.kind == kChunk) {
        receive_chunk(p, s);
      } else {
        std::shared_ptr<Request> match;
        for (auto it = p.posted.begin(); it != p.posted.end(); ++it) {
          if ((*it)->tag == s.tag) {
            match = *it;
            p.posted.erase(it);
            break;
          }
        }
        std::string region = s.kind == kRtsRegion ? std::string(reinterpret_cast<const char*>(s.data)) : "";
        if (match) {
          deliver(p, *match, s.kind, s.bytes, s.addr, s.cookie, region, s.data);
        } else {
          Unexpected u{s.kind, s.tag, s.bytes, s.addr, s.cookie, region, {}};
          if (s.kind == kEager) u.data.assign(s.data, s.data + s.bytes);
          p.unexpected.push_back(std::move(u));
        }
      }
      s.full.store(0, std::memory_order_release);
      ++p.in_head;
      moved = true;
    }
    if (moved) {
      in_head_mirror_[static_cast<size_t>(p.local)].store(p.in_head, std::memory_order_relaxed);
      if (p.local != me_) ring_doorbell_if_sleeping(p.header);
    }
    return moved;
  }

  void receive_chunk(Peer& p, const Slot& s) {
    uint64_t total = s.bytes, off = s.addr, len = s.cookie;
    if (off == 0) {
      p.chunk_req = nullptr;
      p.chunk_discard = false;
      p.chunk_unexpected = nullptr;
      for (auto it = p.posted.begin(); it != p.posted.end(); ++it) {
        if ((*it)->tag == s.tag) {
          p.chunk_req = *it;
          p.posted.erase(it);
          break;
        }
      }
      if (p.chunk_req && total > p.chunk_req->cap) {
        p.chunk_req->error = std::make_exception_ptr(InvalidArgument(
            "message from rank " + std::to_string(p.rank) + " has " + std::to_string(total) +
                " bytes but the receive holds " + std::to_string(p.chunk_req->cap) + " (sizes differ between ranks?)",
            __FILE__, __LINE__));
        p.chunk_req = nullptr;
        p.chunk_discard = true;
      } else if (!p.chunk_req) {
        p.chunk_unexpected = std::make_unique<Unexpected>();
        p.chunk_unexpected->kind = kEager;
        p.chunk_unexpected->tag = s.tag;
        p.chunk_unexpected->bytes = total;
        p.chunk_unexpected->data.resize(total);
      }
    }
    if (p.chunk_req)
      std::memcpy(static_cast<uint8_t*>(p.chunk_req->buf) + off, s.data, len);
    else if (p.chunk_unexpected)
      std::memcpy(p.chunk_unexpected->data.data() + off, s.data, len);
    if (off + len < total) return;
    if (p.chunk_req) {
      p.chunk_req->bytes = total;
      p.chunk_req->done = true;
    } else if (p.chunk_unexpected) {
      // Complete: now it may match a receive posted meanwhile, like any arrival.
      Unexpected u = std::move(*p.chunk_unexpected);
      std::shared_ptr<Request> match;
      for (auto it = p.posted.begin(); it != p.posted.end(); ++it) {
        if ((*it)->tag == u.tag) {
          match = *it;
          p.posted.erase(it);
          break;
        }
      }
      if (match)
        deliver(p, *match, kEager, u.bytes, 0, 0, "", u.data.data());
      else
        p.unexpected.push_back(std::move(u));
    }
    p.chunk_req = nullptr;
    p.chunk_unexpected = nullptr;
    p.chunk_discard = false;
  }

  void deliver(Peer& p, Request& r, uint32_t kind, uint64_t bytes, uint64_t addr, uint64_t cookie,
               const std::string& region, const uint8_t* data) {
    r.bytes = bytes;
    if (bytes > r.cap) {
      r.error = std::make_exception_ptr(InvalidArgument(
          "message from rank " + std::to_string(p.rank) + " has " + std::to_string(bytes) +
              " bytes but the receive holds " + std::to_string(r.cap) + " (sizes differ between ranks?)",
          __FILE__, __LINE__));
      if (kind != kEager) send_fin(p, cookie, kFinTruncated);
      return;
    }
    if (kind == kEager) {
      if (bytes) std::memcpy(r.buf, data, bytes);
      r.done = true;
      return;
    }
    int64_t status = kFinOk;
    try {
      if (kind == kRtsRegion)
        copy_from_region(p, region, addr, r.buf, bytes);
      else
        copy_from_peer(p, addr, r.buf, bytes);
      r.done = true;
    } catch (...) {
      r.error = std::current_exception();
      status = kFinCopyFailed;
    }
    send_fin(p, cookie, status);
  }

  void send_fin(Peer& p, uint64_t cookie, int64_t status) {
    Outgoing o;
    o.kind = kFin;
    o.cookie = cookie;
    o.status = status;
    p.outq.push_back(std::move(o));
    flush(p);
  }

  void copy_from_peer(Peer& p, uint64_t addr, void* dst, size_t bytes) {
    if (p.local == me_) {
      stream_copy(dst, reinterpret_cast<const void*>(addr), bytes);
      return;
    }
    size_t done = 0;
    while (done < bytes) {
      iovec local{static_cast<char*>(dst) + done, bytes - done};
      iovec remote{reinterpret_cast<void*>(addr + done), bytes - done};
      ssize_t n = ::process_vm_readv(p.pid, &local, 1, &remote, 1, 0);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        SY_THROW(IoError, "shm: cross-memory read of " << bytes << " bytes from " << peer_text(p) << " failed: "
                                                       << errno_text(errno)
                                                       << " (hint: needs ptrace permission, e.g. CAP_SYS_PTRACE or "
                                                          "kernel.yama.ptrace_scope=0)");
      }
      done += static_cast<size_t>(n);
    }
  }

  void copy_from_region(Peer& p, const std::string& name, uint64_t offset, void* dst, size_t bytes) {
    auto it = peer_regions_.find(name);
    if (it == peer_regions_.end()) {
      if (!name.starts_with(name_prefix_))
        SY_THROW(InternalError, "shm: region name '" << name << "' from " << peer_text(p) << " is not of this job");
      it = peer_regions_.emplace(name, map_shm(name, false, 0)).first;
    }
    SY_REQUIRE(offset + bytes <= it->second.size(), "shm: registered send from " << peer_text(p)
                                                                                 << " is outside its region " << name);
    stream_copy(dst, it->second.data() + offset, bytes);
  }

  int rank_;
  size_t slots_;
  int me_ = -1;
  std::string name_prefix_;
  std::string own_name_;
  Mapping own_;
  bool linked_ = false;
  SegmentHeader* own_header_ = nullptr;
  std::vector<Peer> peers_;
  std::unique_ptr<std::atomic<uint64_t>[]> in_head_mirror_;  // peers_[i].in_head, for wait_for_event
  std::map<int, int> index_;
  uint64_t next_cookie_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Request>> rts_waiting_;
  std::map<uintptr_t, std::weak_ptr<SharedRegion>> regions_;
  std::map<std::string, Mapping> peer_regions_;
};

}  // namespace

SharedRegion::SharedRegion(std::string name, size_t bytes) : name_(std::move(name)), bytes_(bytes) {
  base_ = map_shm(name_, true, bytes).release();
}

SharedRegion::~SharedRegion() {
  if (base_) ::munmap(base_, bytes_);
  ::shm_unlink(name_.c_str());
}

std::unique_ptr<ShmTransport> make_shm_transport(int rank, const std::vector<int>& local_ranks, Store& store,
                                                 const std::string& key_prefix, const std::string& job_uid,
                                                 std::chrono::milliseconds timeout) {
  return std::make_unique<ShmTransportImpl>(rank, local_ranks, store, key_prefix, job_uid, timeout);
}

}  // namespace switchyard::comm::detail
