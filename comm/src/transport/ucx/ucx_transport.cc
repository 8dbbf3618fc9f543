// UCX (ucp) transport: tagged messages between ranks on different nodes. See ucx_transport.h
// for the contract and docs/comm-ucx.md for the design (tags, faults, the InfiniBand RMA plan).
#include "transport/ucx/ucx_transport.h"

#include <poll.h>
#include <sched.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"

namespace switchyard::comm {
namespace {

const Param<int64_t> kConnectTimeoutMs("COMM_UCX_CONNECT_TIMEOUT_MS", 60000, "ms",
                                       "how long UCX transport set-up waits for peers' addresses and hellos");
const Param<int64_t> kCloseTimeoutMs("COMM_UCX_CLOSE_TIMEOUT_MS", 5000, "ms",
                                     "how long UCX transport shutdown waits to flush goodbyes and close endpoints");

constexpr int kRankShift = 44;
constexpr int kMaxRanks = 1 << 20;
constexpr uint64_t kHelloTag = kMaxUcxTag;  // zero-byte message that brings a connection up
constexpr uint64_t kByeTag = kMaxUcxTag + 1;  // zero-byte message sent before a clean shutdown
constexpr uint64_t kBeatTag = kMaxUcxTag + 2;  // zero-byte heartbeat (hung-peer detection)
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};

using Clock = std::chrono::steady_clock;

// SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS (declared once, by the shm transport, which shares it;
// read through the knob registry; 10 s when this file is built without it).
int64_t heartbeat_timeout_ms() {
  for (const ParamInfo& p : param_registry())
    if (p.name == "COMM_HEARTBEAT_TIMEOUT_MS") return std::stoll(p.current());
  return 10000;
}

// The UCX tag of a message `tag` sent by `sender`.
ucp_tag_t ucx_tag(int sender, uint64_t tag) {
  return (static_cast<uint64_t>(sender) << kRankShift) | tag;
}

// A byte to point zero-size messages at (UCX wants a valid address).
uint8_t zero_size_byte;

// Throws PeerFailure(peer) with a streamed message (SY_THROW has no peer argument).
#define SY_UCX_PEER_FAILURE(peer, stream_expr) \
  do { \
    std::ostringstream sy_msg_; \
    sy_msg_ << stream_expr; \
    throw ::switchyard::PeerFailure((peer), sy_msg_.str(), __FILE__, __LINE__); \
  } while (0)

// Appends `rank` to a comma-separated list of ranks.
void append_rank(std::string& list, int rank) {
  if (!list.empty()) list += ',';
  list += std::to_string(rank);
}

void throw_on_ucs_error(ucs_status_t status, const char* what) {
  if (status != UCS_OK) SY_THROW(IoError, "ucx: " << what << " failed: " << ucs_status_string(status));
}

// State of one peer: its endpoint and whether its connection broke.
struct PeerState {
  int rank = -1;
  ucp_ep_h ep = nullptr;
  ucs_status_t error = UCS_OK;  // first error the endpoint reported
  void* bye_recv = nullptr;  // posted receive of the peer's goodbye
  bool bye_done = false;
  std::chrono::steady_clock::time_point heard{};  // last receive from this peer that completed
};

// The ucp context, worker and endpoints. Shared by the Transport and its requests so a
// request never touches a destroyed worker.
class UcxWorker {
 public:
  UcxWorker(int rank, int world_size) : rank_(rank), peers_(world_size) {}
  ~UcxWorker() {
    for (PeerState& p : peers_) {
      if (p.bye_recv != nullptr) {
        ucp_request_cancel(worker_, p.bye_recv);
        ucp_request_free(p.bye_recv);
      }
      if (p.ep != nullptr) {
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_EP_CLOSE_FLAG_FORCE;
        void* req = ucp_ep_close_nbx(p.ep, &param);
        if (req != nullptr && !UCS_PTR_IS_ERR(req)) ucp_request_free(req);
      }
    }
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  void open() {
    ucp_config_t* config = nullptr;
    throw_on_ucs_error(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
    // Shared memory would let two virtual nodes on one machine skip the network; every
    // other transport (tcp here, rc/dc/ud on InfiniBand) is what a real host pair uses.
    if (std::getenv("UCX_TLS") == nullptr) ucp_config_modify(config, "TLS", "^shm");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
    ucs_status_t status = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    throw_on_ucs_error(status, "ucp_init");
    ucp_worker_params_t wparams{};
    wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    // MULTI: the comm core calls wait_for_event() (ucp_worker_arm) outside its lock, so a
    // waiter may arm while another thread progresses or posts.
    wparams.thread_mode = UCS_THREAD_MODE_MULTI;
    throw_on_ucs_error(ucp_worker_create(context_, &wparams, &worker_), "ucp_worker_create");
    throw_on_ucs_error(ucp_worker_get_efd(worker_, &event_fd_), "ucp_worker_get_efd");
  }

  // Sleeps until the worker has an event (a message arrived, a send finished, a signal)
  // or `max_wait` passed. Returns at once when events are already pending.
  void wait_for_event(std::chrono::microseconds max_wait) {
    if (worker_ == nullptr || event_fd_ < 0 || ucp_worker_arm(worker_) != UCS_OK) return;
    pollfd fd{event_fd_, POLLIN, 0};
    timespec ts{static_cast<time_t>(max_wait.count() / 1000000), static_cast<long>(max_wait.count() % 1000000) * 1000};
    ppoll(&fd, 1, &ts, nullptr);
  }
  // Wakes wait_for_event() from any thread (ucp_worker_signal is thread-safe in every mode).
  void signal() {
    if (worker_ != nullptr) ucp_worker_signal(worker_);
  }

  std::vector<uint8_t> address() const {
    ucp_address_t* addr = nullptr;
    size_t len = 0;
    throw_on_ucs_error(ucp_worker_get_address(worker_, &addr, &len), "ucp_worker_get_address");
    std::vector<uint8_t> bytes(reinterpret_cast<uint8_t*>(addr), reinterpret_cast<uint8_t*>(addr) + len);
    ucp_worker_release_address(worker_, addr);
    return bytes;
  }

  void connect(int peer, const std::vector<uint8_t>& address) {
    PeerState& p = peers_[peer];
    p.rank = peer;
    ucp_ep_params_t params{};
    params.field_mask =
        UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(address.data());
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &UcxWorker::on_endpoint_error;
    params.err_handler.arg = &p;
    ucs_status_t status = ucp_ep_create(worker_, &params, &p.ep);
    if (status != UCS_OK) {
      p.ep = nullptr;
      SY_THROW(IoError, "ucx: rank " << rank_ << " cannot create an endpoint to rank " << peer << ": "
                                     << ucs_status_string(status));
    }
    ucp_request_param_t rparam{};
    rparam.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    rparam.memory_type = UCS_MEMORY_TYPE_HOST;
    void* req = ucp_tag_recv_nbx(worker_, &zero_size_byte, 0, ucx_tag(peer, kByeTag), kFullMask, &rparam);
    if (UCS_PTR_IS_ERR(req)) throw_on_ucs_error(UCS_PTR_STATUS(req), "posting the goodbye receive");
    p.bye_recv = req;
  }

  bool progress() { return ucp_worker_progress(worker_) != 0; }

  // True when the peer's connection broke (check after progress()).
  bool failed(int peer) const { return peers_[peer].error != UCS_OK; }

  // True when the peer announced a clean shutdown.
  bool said_bye(int peer) {
    PeerState& p = peers_[peer];
    if (!p.bye_done && p.bye_recv != nullptr && ucp_request_check_status(p.bye_recv) != UCS_INPROGRESS) {
      ucp_request_free(p.bye_recv);
      p.bye_recv = nullptr;
      p.bye_done = true;
    }
    return p.bye_done;
  }

  std::string failure_text(int peer) const {
    std::ostringstream s;
    s << "connection to rank " << peer << " broke (" << ucs_status_string(peers_[peer].error) << ")";
    return s.str();
  }

  ucp_worker_h worker() const { return worker_; }
  PeerState& peer(int rank) { return peers_[rank]; }
  int rank() const { return rank_; }
  int world_size() const { return static_cast<int>(peers_.size()); }

 private:
  static void on_endpoint_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* p = static_cast<PeerState*>(arg);
    if (p->error == UCS_OK) p->error = status;
    SY_DEBUG("comm", "ucx: endpoint to rank " << p->rank << " failed: " << ucs_status_string(status));
  }

  int rank_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int event_fd_ = -1;  // owned by the worker
  std::vector<PeerState> peers_;  // indexed by rank; rank == -1 for ranks that are not peers
};

// One posted send or receive.
class UcxRequest : public TransportRequest {
 public:
  UcxRequest(std::shared_ptr<UcxWorker> worker, bool is_recv, int peer, uint64_t tag, size_t bytes)
      : worker_(std::move(worker)), is_recv_(is_recv), peer_(peer), tag_(tag), bytes_(bytes) {}
  ~UcxRequest() override {
    if (req_ == nullptr) return;
    if (is_recv_) ucp_request_cancel(worker_->worker(), req_);
    ucp_request_free(req_);
  }

  // Takes the result of a *_nbx call: NULL (done now; sends only), an error, or a pending
  // request.
  void start(ucs_status_ptr_t r) {
    if (r == nullptr) {
      finish(UCS_OK, nullptr);
    } else if (UCS_PTR_IS_ERR(r)) {
      finish(UCS_PTR_STATUS(r), nullptr);
    } else {
      req_ = r;
    }
  }
  // Fails the request without posting it (the peer is already gone).
  void fail(ucs_status_t status) { finish(status, nullptr); }

  bool done() override {
    if (req_ != nullptr) {
      ucp_tag_recv_info_t info{};
      ucs_status_t status = is_recv_ ? ucp_tag_recv_request_test(req_, &info) : ucp_request_check_status(req_);
      if (status == UCS_INPROGRESS) {
        if (!worker_->failed(peer_)) return false;
        SY_UCX_PEER_FAILURE(
            peer_, "ucx: rank " << worker_->rank() << " " << op_text() << ": " << worker_->failure_text(peer_));
      }
      ucp_request_free(req_);
      req_ = nullptr;
      finish(status, &info);
    }
    if (status_ == UCS_ERR_MESSAGE_TRUNCATED) {
      SY_THROW(InvalidArgument, "ucx: rank " << worker_->rank() << " " << op_text()
                                             << ": the message is larger than the receive buffer of " << bytes_
                                             << " bytes");
    }
    if (status_ != UCS_OK) {
      std::string cause = worker_->failed(peer_) ? worker_->failure_text(peer_) : ucs_status_string(status_);
      SY_UCX_PEER_FAILURE(peer_, "ucx: rank " << worker_->rank() << " " << op_text() << " failed: " << cause);
    }
    return true;
  }

  size_t bytes() const override { return bytes_; }

 private:
  void finish(ucs_status_t status, const ucp_tag_recv_info_t* info) {
    status_ = status;
    if (is_recv_ && status == UCS_OK && info != nullptr) {
      bytes_ = info->length;
      // Any message is a sign of life (a heartbeat can queue behind a long transfer).
      worker_->peer(peer_).heard = std::chrono::steady_clock::now();
    }
  }
  std::string op_text() const {
    std::ostringstream s;
    s << (is_recv_ ? "receive from rank " : "send to rank ") << peer_ << " (tag " << tag_ << ")";
    return s.str();
  }
  std::shared_ptr<UcxWorker> worker_;
  bool is_recv_;
  int peer_;
  uint64_t tag_;
  size_t bytes_;  // capacity until a receive finishes, then the received size
  void* req_ = nullptr;
  ucs_status_t status_ = UCS_OK;
};

class UcxTransport : public Transport {
 public:
  UcxTransport(int rank, int world_size, const std::vector<int>& peers)
      : worker_(std::make_shared<UcxWorker>(rank, world_size)), peers_(peers) {}

  ~UcxTransport() override { shut_down(); }

  const char* name() const override { return "ucx"; }

  bool can_reach(int peer) const override {
    return peer >= 0 && peer < worker_->world_size() && worker_->peer(peer).ep != nullptr;
  }

  std::unique_ptr<TransportRequest> isend(int peer, uint64_t tag, const void* buf, size_t bytes) override {
    check_args("isend", peer, tag, buf, bytes);
    auto req = std::make_unique<UcxRequest>(worker_, false, peer, tag, bytes);
    if (worker_->failed(peer)) {
      req->fail(worker_->peer(peer).error);
      return req;
    }
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    param.memory_type = UCS_MEMORY_TYPE_HOST;
    const void* data = bytes == 0 ? &zero_size_byte : buf;
    req->start(ucp_tag_send_nbx(worker_->peer(peer).ep, data, bytes, ucx_tag(worker_->rank(), tag), &param));
    return req;
  }

  std::unique_ptr<TransportRequest> irecv(int peer, uint64_t tag, void* buf, size_t bytes) override {
    check_args("irecv", peer, tag, buf, bytes);
    auto req = std::make_unique<UcxRequest>(worker_, true, peer, tag, bytes);
    // No immediate completion: the received size then always comes from the request.
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.memory_type = UCS_MEMORY_TYPE_HOST;
    void* data = bytes == 0 ? &zero_size_byte : buf;
    req->start(ucp_tag_recv_nbx(worker_->worker(), data, bytes, ucx_tag(peer, tag), kFullMask, &param));
    return req;
  }

  bool progress() override {
    bool moved = worker_->progress();
    if (beat_timeout_ms_ > 0 && (++progress_calls_ & 15) == 0) heartbeat();
    return moved;
  }

  void wait_for_event(std::chrono::microseconds max_wait) override { worker_->wait_for_event(max_wait); }
  void interrupt_wait() override { worker_->signal(); }

  void check_peers() override {
    for (int peer : peers_) {
      if (worker_->failed(peer) && !worker_->said_bye(peer)) {
        SY_UCX_PEER_FAILURE(peer, "ucx: rank " << worker_->rank() << ": " << worker_->failure_text(peer));
      }
    }
    if (beat_timeout_ms_ <= 0) return;
    heartbeat();
    auto now = Clock::now();
    for (size_t i = 0; i < peers_.size(); ++i) {
      int peer = peers_[i];
      if (worker_->failed(peer) || worker_->said_bye(peer)) continue;
      auto heard = std::max(beats_[i].heard, worker_->peer(peer).heard);
      auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - heard).count();
      if (silent > beat_timeout_ms_) {
        // Treated as a broken connection from here on (shutdown sends it no goodbye and
        // does not wait for a flush it would never answer).
        worker_->peer(peer).error = UCS_ERR_ENDPOINT_TIMEOUT;
        SY_UCX_PEER_FAILURE(peer, "ucx: rank " << peer << " stopped making progress: no heartbeat for " << silent
                                               << " ms (hung or stopped; SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS="
                                               << beat_timeout_ms_ << ")");
      }
    }
  }

  // Publishes the address, connects to every peer and exchanges hellos (see the header).
  void connect(Store& store, const std::string& key_prefix) {
    worker_->open();
    store.set(key_prefix + std::to_string(worker_->rank()), worker_->address());
    const auto deadline = Clock::now() + std::chrono::milliseconds(kConnectTimeoutMs.get());
    for (int peer : peers_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      std::vector<uint8_t> address;
      try {
        address = store.get(key_prefix + std::to_string(peer), std::max(left, std::chrono::milliseconds(1)));
      } catch (const Timeout&) {
        SY_THROW(Timeout, "ucx: rank " << worker_->rank() << " waited " << kConnectTimeoutMs.get()
                                       << " ms for the addresses of ranks " << missing_addresses(store, key_prefix)
                                       << " (SWITCHYARD_COMM_UCX_CONNECT_TIMEOUT_MS)");
      }
      worker_->connect(peer, address);
    }
    // One zero-byte hello each way brings every connection up, so a peer that dies later
    // breaks a live connection and is detected.
    std::vector<std::unique_ptr<TransportRequest>> sends, recvs;
    for (int peer : peers_) {
      sends.push_back(post_send(peer, kHelloTag));
      recvs.push_back(post_recv(peer, kHelloTag));
    }
    while (true) {
      worker_->progress();
      std::string waiting;
      for (size_t i = 0; i < peers_.size(); ++i) {
        if (!sends[i]->done() || !recvs[i]->done()) append_rank(waiting, peers_[i]);
      }
      if (waiting.empty()) break;
      if (Clock::now() > deadline) {
        SY_THROW(Timeout, "ucx: rank " << worker_->rank() << " got no hello within " << kConnectTimeoutMs.get()
                                       << " ms from ranks " << waiting);
      }
      sched_yield();
    }
    SY_DEBUG("comm", "ucx: rank " << worker_->rank() << " connected to " << peers_.size() << " peers");
    beat_timeout_ms_ = heartbeat_timeout_ms();
    beats_.resize(peers_.size());
    for (size_t i = 0; i < peers_.size(); ++i) {
      beats_[i].heard = Clock::now();
      if (beat_timeout_ms_ > 0) beats_[i].recv = post_recv(peers_[i], kBeatTag);
    }
  }

 private:
  void check_args(const char* op, int peer, uint64_t tag, const void* buf, size_t bytes) const {
    SY_REQUIRE(can_reach(peer), "ucx " << op << ": rank " << worker_->rank() << " has no endpoint to peer " << peer);
    SY_REQUIRE(tag < kMaxUcxTag, "ucx " << op << ": tag " << tag << " is not below the limit " << kMaxUcxTag);
    SY_REQUIRE(buf != nullptr || bytes == 0, "ucx " << op << ": null buffer with " << bytes << " bytes");
  }

  // Sends/receives a zero-byte message with a reserved tag.
  std::unique_ptr<TransportRequest> post_send(int peer, uint64_t tag) {
    auto req = std::make_unique<UcxRequest>(worker_, false, peer, tag, 0);
    ucp_request_param_t param{};
    req->start(ucp_tag_send_nbx(worker_->peer(peer).ep, &zero_size_byte, 0, ucx_tag(worker_->rank(), tag), &param));
    return req;
  }
  std::unique_ptr<TransportRequest> post_recv(int peer, uint64_t tag) {
    auto req = std::make_unique<UcxRequest>(worker_, true, peer, tag, 0);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    req->start(ucp_tag_recv_nbx(worker_->worker(), &zero_size_byte, 0, ucx_tag(peer, tag), kFullMask, &param));
    return req;
  }

  std::string missing_addresses(Store& store, const std::string& key_prefix) const {
    std::string missing;
    for (int peer : peers_) {
      if (!store.check(key_prefix + std::to_string(peer))) append_rank(missing, peer);
    }
    return missing.empty() ? "(none missing now)" : missing;
  }

  // Sends a goodbye to every live peer and closes the endpoints, flushing what is still
  // queued, within SWITCHYARD_COMM_UCX_CLOSE_TIMEOUT_MS. Never throws.
  void shut_down() {
    const auto deadline = Clock::now() + std::chrono::milliseconds(kCloseTimeoutMs.get());
    std::vector<std::unique_ptr<TransportRequest>> byes;
    for (int peer : peers_) {
      if (worker_->peer(peer).ep != nullptr && !worker_->failed(peer)) byes.push_back(post_send(peer, kByeTag));
    }
    for (auto& bye : byes) {
      try {
        while (!bye->done() && Clock::now() < deadline) worker_->progress();
      } catch (const Error&) {
        // The peer is gone already; nothing to say goodbye to.
      }
    }
    // Flush (everything posted has left this rank), then close without the disconnect
    // handshake, which would wait for the peer to progress.
    std::vector<void*> flushing;
    for (int peer : peers_) {
      PeerState& p = worker_->peer(peer);
      if (p.ep == nullptr || worker_->failed(peer)) continue;
      ucp_request_param_t param{};
      void* req = ucp_ep_flush_nbx(p.ep, &param);
      if (req != nullptr && !UCS_PTR_IS_ERR(req)) flushing.push_back(req);
    }
    wait_requests(flushing, deadline);
    std::vector<void*> closing;
    for (int peer : peers_) {
      PeerState& p = worker_->peer(peer);
      if (p.ep == nullptr) continue;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* req = ucp_ep_close_nbx(p.ep, &param);
      p.ep = nullptr;
      if (req != nullptr && !UCS_PTR_IS_ERR(req)) closing.push_back(req);
    }
    wait_requests(closing, deadline);
    SY_DEBUG("comm", "ucx: rank " << worker_->rank() << " closed its endpoints");
  }

  // Progresses until every UCX request completed or the deadline passed, then frees them.
  void wait_requests(const std::vector<void*>& reqs, Clock::time_point deadline) {
    for (void* req : reqs) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < deadline) worker_->progress();
      ucp_request_free(req);
    }
  }

  // Heartbeats (hung-peer detection, like the shm transport's counters): every
  // timeout / 5 a zero-byte message to each live peer, and one receive per peer kept
  // posted; a live peer unheard for the timeout is hung. Driven from progress() (the comm
  // core's progress thread calls it at least every 2 ms, also when idle) and check_peers().
  void heartbeat() {
    auto now = Clock::now();
    bool send = now - last_beat_sent_ >= std::chrono::milliseconds(std::max<int64_t>(1, beat_timeout_ms_ / 5));
    if (send) last_beat_sent_ = now;
    for (size_t i = 0; i < peers_.size(); ++i) {
      int peer = peers_[i];
      if (worker_->failed(peer)) continue;
      Beat& b = beats_[i];
      try {
        while (b.recv && b.recv->done()) {
          b.heard = now;
          b.recv = post_recv(peer, kBeatTag);
        }
        if (send && (!b.send || b.send->done())) b.send = post_send(peer, kBeatTag);
      } catch (const Error&) {
        // A broken connection: check_peers() reports it (or it said goodbye).
        b.recv.reset();
        b.send.reset();
      }
    }
  }

  struct Beat {
    Clock::time_point heard;  // last heartbeat received (or connection time)
    std::unique_ptr<TransportRequest> recv, send;
  };

  std::shared_ptr<UcxWorker> worker_;
  std::vector<int> peers_;
  int64_t beat_timeout_ms_ = 0;
  std::vector<Beat> beats_;  // per peers_ entry
  Clock::time_point last_beat_sent_{};
  uint64_t progress_calls_ = 0;
};

}  // namespace

std::unique_ptr<Transport> make_ucx_transport(int rank, int world_size, Store& store, const std::string& key_prefix,
                                              const std::vector<int>& peers) {
  SY_REQUIRE(world_size > 0 && world_size <= kMaxRanks,
             "ucx transport: world size " << world_size << " is outside [1, " << kMaxRanks << "]");
  SY_REQUIRE(rank >= 0 && rank < world_size, "ucx transport: rank " << rank << " is outside [0, " << world_size << ")");
  std::vector<bool> seen(world_size, false);
  for (int peer : peers) {
    SY_REQUIRE(peer >= 0 && peer < world_size && peer != rank, "ucx transport: rank " << rank << ": peer " << peer
                                                                                      << " is not another rank of [0, "
                                                                                      << world_size << ")");
    SY_REQUIRE(!seen[peer], "ucx transport: rank " << rank << ": peer " << peer << " is listed twice");
    seen[peer] = true;
  }
  auto transport = std::make_unique<UcxTransport>(rank, world_size, peers);
  transport->connect(store, key_prefix);
  return transport;
}

}  // namespace switchyard::comm
