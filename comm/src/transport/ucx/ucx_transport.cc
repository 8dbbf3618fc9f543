// UCX (ucp) transport: tagged messages between ranks on different nodes. See ucx_transport.h
// for the contract and docs/comm-ucx.md for the design (tags, faults, the InfiniBand RMA plan).
#include "transport/ucx/ucx_transport.h"

#include <poll.h>
#include <sched.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
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

const Param<int64_t> kRmaMode("COMM_UCX_RMA", -1, "mode",
                               "large messages by RMA put into the receiver's registered buffer: -1 where the "
                               "endpoint's RMA lane is native (not tcp), 0 never, 1 always (also over tcp: slow)");
const Param<int64_t> kFailureMode("COMM_UCX_FAILURE_MODE", -1, "mode",
                                   "UCX endpoints' error handling: -1 auto (none when the context's only "
                                   "transports are tcp and self, so tcp's rendezvous puts straight into the "
                                   "receive buffer; UCX's peer-failure mode otherwise), 0 none, 1 peer");
const Param<int64_t> kRmaMinBytes("COMM_UCX_RMA_MIN_BYTES", 256 << 10, "bytes",
                                  "smallest message sent by RMA put when the RMA path is on for a peer");

// UCX tag layout: bit 63 marks a request-to-send of the RMA path (it travels on the user's
// (sender, tag) so it keeps the post order), bit 62 the RMA path's control messages,
// bits 44-61 the sender's rank, bits 0-43 the transport tag (control messages: bit 43 the
// kind, bits 0-42 the data sender's message id).
constexpr int kRankShift = 44;
constexpr int kMaxRanks = 1 << 18;
constexpr ucp_tag_t kRtsBit = ucp_tag_t{1} << 63;
constexpr ucp_tag_t kCtrlBit = ucp_tag_t{1} << 62;
constexpr ucp_tag_t kFinKind = ucp_tag_t{1} << 43;  // data sender -> receiver: the data landed
constexpr uint64_t kRmaIdMask = (uint64_t{1} << 43) - 1;
constexpr uint64_t kHelloTag = kMaxUcxTag;  // zero-byte message that brings a connection up
constexpr uint64_t kByeTag = kMaxUcxTag + 1;  // zero-byte message sent before a clean shutdown
constexpr uint64_t kBeatTag = kMaxUcxTag + 2;  // zero-byte heartbeat (hung-peer detection)
constexpr ucp_tag_t kFullMask = ~ucp_tag_t{0};
constexpr int64_t kByeWaitMs = 20;  // how long shutdown waits for peers' goodbyes before flushing

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

// UCX tag of an RMA control message sent by `sender` for message `id` of the data sender.
ucp_tag_t ctrl_tag(int sender, bool fin, uint64_t id) {
  return kCtrlBit | (static_cast<uint64_t>(sender) << kRankShift) | (fin ? kFinKind : 0) | (id & kRmaIdMask);
}

// RMA path messages. The request-to-send lands in the receiver's posted buffer (it is later
// overwritten by the put); the ready-to-receive carries the packed rkey; the fin the size.
struct RtsHeader {
  uint64_t id;  // data sender's message id
  uint64_t bytes;  // message size
};
struct RtrHeader {
  uint64_t id;
  uint64_t status;  // 0: put `bytes` at addr; 1: the receive buffer (capacity) is too small
  uint64_t addr;
  uint64_t capacity;
  uint64_t rkey_bytes;  // packed rkey follows (0: the sender has the region's rkey already)
  uint64_t region_id;  // 0: a buffer registered for this message only; else a registered region
};
constexpr size_t kRtrBytes = 4096;  // receive buffer of a ready-to-receive (header + rkey)

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
    release_rkeys_and_regions();
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

  // use_rma: also open UCP_FEATURE_RMA (puts into registered buffers).
  void open(bool use_rma) {
    ucp_config_t* config = nullptr;
    throw_on_ucs_error(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read");
    // Shared memory would let two virtual nodes on one machine skip the network; every
    // other transport (tcp here, rc/dc/ud on InfiniBand) is what a real host pair uses.
    if (std::getenv("UCX_TLS") == nullptr) ucp_config_modify(config, "TLS", "^shm");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP | (use_rma ? UCP_FEATURE_RMA : 0);
    ucs_status_t status = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    throw_on_ucs_error(status, "ucp_init");
    // Error handling mode of the endpoints. UCX 1.13 gives an endpoint in peer-failure mode
    // RMA (rendezvous) lanes only on memory domains that can invalidate registrations, which
    // tcp's cannot: its rendezvous then moves through 64 KiB active messages copied out of
    // UCX's receive buffers instead of tcp's put, which the receiver reads straight into the
    // posted buffer (one copy fewer). Without peer-failure mode UCX still calls the error
    // callback when a connection breaks; heartbeats catch hung peers either way.
    const int64_t mode = kFailureMode.get();
    std::string resources;
    tcp_only_ = context_tcp_only(&resources);
    peer_failure_mode_ = mode == 1 || (mode == -1 && !tcp_only_);
    SY_DEBUG("comm", "ucx: rank " << rank_ << ": transports " << resources << "; endpoints in "
                                  << (peer_failure_mode_ ? "peer-failure" : "no-error-handling")
                                  << " mode (SWITCHYARD_COMM_UCX_FAILURE_MODE=" << mode << ")");
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
    params.err_mode = peer_failure_mode_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
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

  // True when the endpoint to `peer` carries RMA on a native lane (ucx_ep_info_has_native_rma).
  bool native_rma(int peer, std::string* lanes) { return ucx_ep_info_has_native_rma(endpoint_info(peer), lanes); }
  // ucp_ep_print_info() of the endpoint to `peer`.
  std::string endpoint_info(int peer) const {
    return print_to_string([&](FILE* f) { ucp_ep_print_info(peers_[peer].ep, f); });
  }
  bool peer_failure_mode() const { return peer_failure_mode_; }

  // Operations of the RMA path with several steps; the transport's progress() advances them
  // (so a request waiting behind another in the comm core still answers its peer).
  struct Stepper {
    virtual ~Stepper() = default;
    virtual void step() = 0;  // never throws (keeps the error for done())
  };
  void add_stepper(Stepper* s) { steppers_.push_back(s); }
  void remove_stepper(Stepper* s) { steppers_.erase(std::remove(steppers_.begin(), steppers_.end(), s), steppers_.end()); }
  void step_all() {
    for (size_t i = 0; i < steppers_.size(); ++i) steppers_[i]->step();
  }
  uint64_t next_rma_id() { return next_rma_id_++ & kRmaIdMask; }
  UcxRmaCounters& rma_counters() { return rma_counters_; }

  // Registered memory (Transport::add_registered_memory): mapped once, its packed rkey sent
  // to each peer once. Regions whose owner expired are unmapped at the next lookup.
  struct Region {
    uint64_t id = 0;
    uintptr_t base = 0;
    size_t bytes = 0;
    std::weak_ptr<const void> owner;
    ucp_mem_h memh = nullptr;
    std::vector<uint8_t> rkey;  // packed
    std::vector<bool> rkey_sent;  // by peer rank
  };
  void add_region(void* base, size_t bytes, std::weak_ptr<const void> owner) {
    auto r = std::make_unique<Region>();
    r->id = ++last_region_id_;
    r->base = reinterpret_cast<uintptr_t>(base);
    r->bytes = bytes;
    r->owner = std::move(owner);
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = base;
    mp.length = bytes;
    throw_on_ucs_error(ucp_mem_map(context_, &mp, &r->memh), "ucp_mem_map of a registered buffer");
    void* packed = nullptr;
    size_t packed_bytes = 0;
    ucs_status_t status = ucp_rkey_pack(context_, r->memh, &packed, &packed_bytes);
    if (status != UCS_OK) ucp_mem_unmap(context_, r->memh);
    throw_on_ucs_error(status, "ucp_rkey_pack of a registered buffer");
    r->rkey.assign(static_cast<uint8_t*>(packed), static_cast<uint8_t*>(packed) + packed_bytes);
    ucp_rkey_buffer_release(packed);
    r->rkey_sent.assign(peers_.size(), false);
    regions_.push_back(std::move(r));
  }
  // The live region holding [p, p + bytes), or nullptr. Unmaps regions whose owner expired.
  Region* find_region(const void* p, size_t bytes) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    Region* found = nullptr;
    for (size_t i = 0; i < regions_.size();) {
      Region& r = *regions_[i];
      if (r.owner.expired()) {
        ucp_mem_unmap(context_, r.memh);
        regions_.erase(regions_.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      if (a >= r.base && a + bytes <= r.base + r.bytes) found = &r;
      ++i;
    }
    return found;
  }
  // Unpacked rkeys of peers' regions, by (peer, region id); destroyed before the endpoints.
  ucp_rkey_h& cached_rkey(int peer, uint64_t region_id) { return rkeys_[{peer, region_id}]; }
  ucp_rkey_h find_cached_rkey(int peer, uint64_t region_id) const {
    auto it = rkeys_.find({peer, region_id});
    return it == rkeys_.end() ? nullptr : it->second;
  }
  void release_rkeys_and_regions() {
    for (auto& [key, rkey] : rkeys_)
      if (rkey != nullptr) ucp_rkey_destroy(rkey);
    rkeys_.clear();
    for (auto& r : regions_) ucp_mem_unmap(context_, r->memh);
    regions_.clear();
  }

  ucp_worker_h worker() const { return worker_; }
  ucp_context_h context() const { return context_; }
  PeerState& peer(int rank) { return peers_[rank]; }
  int rank() const { return rank_; }
  int world_size() const { return static_cast<int>(peers_.size()); }

 private:
  // The text `print` writes to a FILE (UCX's print_info functions).
  template <typename Print>
  static std::string print_to_string(Print print) {
    char* text = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&text, &len);
    if (f == nullptr) return {};
    print(f);
    fclose(f);
    std::string out(text, len);
    free(text);
    return out;
  }
  // True when the context's transports are only tcp and self (ucx_context_info_is_tcp_only);
  // their names go to *resources.
  bool context_tcp_only(std::string* resources) const {
    return ucx_context_info_is_tcp_only(print_to_string([&](FILE* f) { ucp_context_print_info(context_, f); }),
                                        resources);
  }

  static void on_endpoint_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* p = static_cast<PeerState*>(arg);
    if (p->error == UCS_OK) p->error = status;
    SY_DEBUG("comm", "ucx: endpoint to rank " << p->rank << " failed: " << ucs_status_string(status));
  }

  int rank_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int event_fd_ = -1;  // owned by the worker
  bool tcp_only_ = false;  // the context's transports are tcp and self only
  bool peer_failure_mode_ = true;  // endpoints in UCP_ERR_HANDLING_MODE_PEER
  std::vector<PeerState> peers_;  // indexed by rank; rank == -1 for ranks that are not peers
  std::vector<Stepper*> steppers_;  // live RMA-path requests (owned by their callers)
  uint64_t next_rma_id_ = 0;
  UcxRmaCounters rma_counters_;
  std::vector<std::unique_ptr<Region>> regions_;
  uint64_t last_region_id_ = 0;
  std::map<std::pair<int, uint64_t>, ucp_rkey_h> rkeys_;
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
  // The UCX tag the matched message carried (receives, once done()).
  ucp_tag_t sender_tag() const { return sender_tag_; }

 private:
  void finish(ucs_status_t status, const ucp_tag_recv_info_t* info) {
    status_ = status;
    if (is_recv_ && status == UCS_OK && info != nullptr) {
      bytes_ = info->length;
      sender_tag_ = info->sender_tag;
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
  ucp_tag_t sender_tag_ = 0;
};

// True once a raw UCX request (put, flush) finished; frees it. nullptr counts as finished.
// Throws PeerFailure when it failed or its peer's connection broke while it was pending.
bool raw_request_done(UcxWorker& worker, void*& req, int peer, const char* what) {
  if (req == nullptr) return true;
  ucs_status_t status = ucp_request_check_status(req);
  if (status == UCS_INPROGRESS) {
    if (!worker.failed(peer)) return false;
    status = worker.peer(peer).error;
  } else {
    ucp_request_free(req);
    req = nullptr;
  }
  if (status != UCS_OK) {
    std::string cause = worker.failed(peer) ? worker.failure_text(peer) : ucs_status_string(status);
    SY_UCX_PEER_FAILURE(peer, "ucx: rank " << worker.rank() << " " << what << " to rank " << peer << " failed: " << cause);
  }
  return true;
}

// Takes the result of ucp_put_nbx / ucp_ep_flush_nbx: the pending request, or nullptr when
// it finished at once; throws PeerFailure on an immediate error.
void* take_raw_request(UcxWorker& worker, ucs_status_ptr_t r, int peer, const char* what) {
  if (UCS_PTR_IS_ERR(r)) {
    SY_UCX_PEER_FAILURE(peer, "ucx: rank " << worker.rank() << " " << what << " to rank " << peer
                                           << " failed: " << ucs_status_string(UCS_PTR_STATUS(r)));
  }
  return r;
}

// A request of the RMA path: advance() moves it through its steps, from the transport's
// progress() (it is on the worker's stepper list while it lives) and from done(); an error
// is kept and rethrown by done().
class UcxRmaRequest : public TransportRequest, public UcxWorker::Stepper {
 public:
  explicit UcxRmaRequest(std::shared_ptr<UcxWorker> worker) : worker_(std::move(worker)) {
    worker_->add_stepper(this);
  }
  ~UcxRmaRequest() override { worker_->remove_stepper(this); }

  void step() final {
    if (error_ || finished_) return;
    try {
      advance();
    } catch (...) {
      error_ = std::current_exception();
    }
  }
  bool done() final {
    step();
    if (error_) std::rethrow_exception(error_);
    return finished_;
  }

 protected:
  virtual void advance() = 0;  // sets finished_ at the end

  std::shared_ptr<UcxWorker> worker_;
  bool finished_ = false;

 private:
  std::exception_ptr error_;
};

// The RMA path, sending side: request-to-send (id, size) on the user's (peer, tag) with
// kRtsBit; wait for the receiver's ready-to-receive (address, rkey); ucp_put_nbx the whole
// message into the receiver's buffer; flush the endpoint (the data is in remote memory);
// fin (the size) as a control message. Advanced by the transport's progress() and done().
class UcxRmaSend : public UcxRmaRequest {
 public:
  UcxRmaSend(std::shared_ptr<UcxWorker> worker, int peer, uint64_t tag, const void* buf, size_t bytes)
      : UcxRmaRequest(std::move(worker)), peer_(peer), tag_(tag), buf_(buf), bytes_(bytes), rtr_(kRtrBytes) {
    header_ = {worker_->next_rma_id(), bytes};
    ucp_request_param_t rparam{};
    rparam.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    rparam.memory_type = UCS_MEMORY_TYPE_HOST;
    rtr_recv_ = std::make_unique<UcxRequest>(worker_, true, peer, tag, kRtrBytes);
    rtr_recv_->start(ucp_tag_recv_nbx(worker_->worker(), rtr_.data(), kRtrBytes, ctrl_tag(peer, false, header_.id),
                                      kFullMask, &rparam));
    ucp_request_param_t sparam{};
    sparam.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    sparam.memory_type = UCS_MEMORY_TYPE_HOST;
    rts_send_ = std::make_unique<UcxRequest>(worker_, false, peer, tag, sizeof(header_));
    rts_send_->start(ucp_tag_send_nbx(worker_->peer(peer).ep, &header_, sizeof(header_),
                                      kRtsBit | ucx_tag(worker_->rank(), tag), &sparam));
  }
  ~UcxRmaSend() override {
    for (void* r : {put_, flush_})
      if (r != nullptr) ucp_request_free(r);
    if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
  }

  size_t bytes() const override { return bytes_; }

 private:
  enum class State { kWaitRtr, kPut, kFlush, kFin, kDone };

  void advance() override {
    UcxWorker& w = *worker_;
    if (state_ == State::kWaitRtr) {
      if (!rts_send_->done() || !rtr_recv_->done()) return;
      RtrHeader h{};
      SY_CHECK(rtr_recv_->bytes() >= sizeof(h));
      std::memcpy(&h, rtr_.data(), sizeof(h));
      if (h.status != 0) {
        SY_THROW(InvalidArgument, "ucx: rank " << w.rank() << " send to rank " << peer_ << " (tag " << tag_
                                               << "): the message of " << bytes_
                                               << " bytes is larger than the receive buffer of " << h.capacity
                                               << " bytes");
      }
      SY_CHECK(sizeof(h) + h.rkey_bytes <= rtr_recv_->bytes());
      ucp_rkey_h rkey = nullptr;
      if (h.region_id == 0) {
        throw_on_ucs_error(ucp_ep_rkey_unpack(w.peer(peer_).ep, rtr_.data() + sizeof(h), &rkey_),
                           "ucp_ep_rkey_unpack");
        rkey = rkey_;
      } else if (h.rkey_bytes > 0) {
        ucp_rkey_h& cached = w.cached_rkey(peer_, h.region_id);
        if (cached == nullptr) {
          throw_on_ucs_error(ucp_ep_rkey_unpack(w.peer(peer_).ep, rtr_.data() + sizeof(h), &cached),
                             "ucp_ep_rkey_unpack");
          ++w.rma_counters().rkeys_unpacked;
        }
        rkey = cached;
      } else {
        // The region's rkey came with an earlier ready-to-receive, which may belong to a
        // request stepped after this one: wait for it.
        rkey = w.find_cached_rkey(peer_, h.region_id);
        if (rkey == nullptr) return;
      }
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
      param.memory_type = UCS_MEMORY_TYPE_HOST;
      put_ = take_raw_request(w, ucp_put_nbx(w.peer(peer_).ep, buf_, bytes_, h.addr, rkey, &param), peer_, "put");
      state_ = State::kPut;
    }
    if (state_ == State::kPut) {
      if (!raw_request_done(w, put_, peer_, "put")) return;
      // Remote completion of the put before the fin goes out.
      ucp_request_param_t param{};
      flush_ = take_raw_request(w, ucp_ep_flush_nbx(w.peer(peer_).ep, &param), peer_, "flush after a put");
      state_ = State::kFlush;
    }
    if (state_ == State::kFlush) {
      if (!raw_request_done(w, flush_, peer_, "flush after a put")) return;
      if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
      rkey_ = nullptr;
      fin_ = bytes_;
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
      param.memory_type = UCS_MEMORY_TYPE_HOST;
      fin_send_ = std::make_unique<UcxRequest>(worker_, false, peer_, tag_, sizeof(fin_));
      fin_send_->start(
          ucp_tag_send_nbx(w.peer(peer_).ep, &fin_, sizeof(fin_), ctrl_tag(w.rank(), true, header_.id), &param));
      state_ = State::kFin;
    }
    if (state_ == State::kFin && fin_send_->done()) {
      state_ = State::kDone;
      finished_ = true;
      ++w.rma_counters().puts_sent;
      w.rma_counters().bytes_put += bytes_;
    }
  }

  int peer_;
  uint64_t tag_;
  const void* buf_;
  size_t bytes_;
  RtsHeader header_{};
  std::vector<uint8_t> rtr_;  // the ready-to-receive lands here
  uint64_t fin_ = 0;
  std::unique_ptr<UcxRequest> rts_send_, rtr_recv_, fin_send_;
  ucp_rkey_h rkey_ = nullptr;  // unpacked for this message only (region_id 0)
  void* put_ = nullptr;
  void* flush_ = nullptr;
  State state_ = State::kWaitRtr;
};

// The RMA path, receiving side (every receive from a peer on the RMA path): the posted
// receive matches the user's (peer, tag) with or without kRtsBit, in post order. A plain
// message finishes it as before; a request-to-send (it lands in the buffer, which the put
// overwrites) makes it register the buffer (ucp_mem_map), answer with the address and the
// packed rkey, and finish when the fin arrives. A message larger than the buffer fails both
// sides with InvalidArgument.
class UcxRmaRecv : public UcxRmaRequest {
 public:
  UcxRmaRecv(std::shared_ptr<UcxWorker> worker, int peer, uint64_t tag, void* buf, size_t capacity)
      : UcxRmaRequest(std::move(worker)), peer_(peer), tag_(tag), buf_(buf), capacity_(capacity) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.memory_type = UCS_MEMORY_TYPE_HOST;
    msg_ = std::make_unique<UcxRequest>(worker_, true, peer, tag, capacity);
    void* data = capacity == 0 ? &zero_size_byte : buf;
    msg_->start(ucp_tag_recv_nbx(worker_->worker(), data, capacity, ucx_tag(peer, tag), ~kRtsBit, &param));
  }
  ~UcxRmaRecv() override {
    fin_recv_.reset();  // cancels a pending fin receive
    if (memh_ != nullptr) ucp_mem_unmap(worker_->context(), memh_);
  }

  size_t bytes() const override { return bytes_; }

 private:
  enum class State { kWaitMessage, kWaitFin, kDone };

  void advance() override {
    UcxWorker& w = *worker_;
    if (state_ == State::kWaitMessage) {
      if (!msg_->done()) return;
      if ((msg_->sender_tag() & kRtsBit) == 0) {
        bytes_ = msg_->bytes();
        state_ = State::kDone;
        finished_ = true;
        return;
      }
      RtsHeader rts{};
      SY_CHECK(msg_->bytes() == sizeof(rts));
      std::memcpy(&rts, buf_, sizeof(rts));
      std::vector<uint8_t> rtr(sizeof(RtrHeader));
      RtrHeader h{rts.id, 0, reinterpret_cast<uintptr_t>(buf_), capacity_, 0, 0};
      if (rts.bytes > capacity_) {
        h.status = 1;
        std::memcpy(rtr.data(), &h, sizeof(h));
        send_rtr(rtr, rts.id);
        SY_THROW(InvalidArgument, "ucx: rank " << w.rank() << " receive from rank " << peer_ << " (tag " << tag_
                                               << "): the message of " << rts.bytes
                                               << " bytes is larger than the receive buffer of " << capacity_
                                               << " bytes");
      }
      if (UcxWorker::Region* region = w.find_region(buf_, rts.bytes)) {
        // Registered once; its rkey goes to each peer once.
        h.region_id = region->id;
        if (!region->rkey_sent[peer_]) {
          h.rkey_bytes = region->rkey.size();
          region->rkey_sent[peer_] = true;
          ++w.rma_counters().rkeys_sent;
        }
        rtr.resize(sizeof(h) + h.rkey_bytes);
        std::memcpy(rtr.data() + sizeof(h), region->rkey.data(), h.rkey_bytes);
      } else {
        // Registered for this message only.
        ucp_mem_map_params_t mp{};
        mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
        mp.address = buf_;
        mp.length = rts.bytes;
        throw_on_ucs_error(ucp_mem_map(w.context(), &mp, &memh_), "ucp_mem_map of a receive buffer");
        ++w.rma_counters().receive_registrations;
        void* packed = nullptr;
        size_t packed_bytes = 0;
        throw_on_ucs_error(ucp_rkey_pack(w.context(), memh_, &packed, &packed_bytes), "ucp_rkey_pack");
        h.rkey_bytes = packed_bytes;
        rtr.resize(sizeof(h) + packed_bytes);
        std::memcpy(rtr.data() + sizeof(h), packed, packed_bytes);
        ucp_rkey_buffer_release(packed);
        ++w.rma_counters().rkeys_sent;
      }
      std::memcpy(rtr.data(), &h, sizeof(h));
      SY_CHECK(rtr.size() <= kRtrBytes);
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
      param.memory_type = UCS_MEMORY_TYPE_HOST;
      fin_recv_ = std::make_unique<UcxRequest>(worker_, true, peer_, tag_, sizeof(fin_));
      fin_recv_->start(
          ucp_tag_recv_nbx(w.worker(), &fin_, sizeof(fin_), ctrl_tag(peer_, true, rts.id), kFullMask, &param));
      send_rtr(rtr, rts.id);
      state_ = State::kWaitFin;
    }
    if (state_ == State::kWaitFin) {
      if (!rtr_send_->done() || !fin_recv_->done()) return;
      bytes_ = fin_;
      if (memh_ != nullptr) ucp_mem_unmap(w.context(), memh_);
      memh_ = nullptr;
      state_ = State::kDone;
      finished_ = true;
      ++w.rma_counters().puts_received;
    }
  }

  void send_rtr(std::vector<uint8_t>& rtr, uint64_t id) {
    rtr_ = std::move(rtr);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    param.memory_type = UCS_MEMORY_TYPE_HOST;
    rtr_send_ = std::make_unique<UcxRequest>(worker_, false, peer_, tag_, rtr_.size());
    rtr_send_->start(ucp_tag_send_nbx(worker_->peer(peer_).ep, rtr_.data(), rtr_.size(),
                                      ctrl_tag(worker_->rank(), false, id), &param));
  }

  int peer_;
  uint64_t tag_;
  void* buf_;
  size_t capacity_;
  size_t bytes_ = 0;
  std::unique_ptr<UcxRequest> msg_, fin_recv_, rtr_send_;
  std::vector<uint8_t> rtr_;  // the ready-to-receive being sent
  uint64_t fin_ = 0;
  ucp_mem_h memh_ = nullptr;
  State state_ = State::kWaitMessage;
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
    if (rma_peer_[peer] && bytes >= rma_min_bytes_ && !worker_->failed(peer))
      return std::make_unique<UcxRmaSend>(worker_, peer, tag, buf, bytes);
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
    if (rma_peer_[peer]) return std::make_unique<UcxRmaRecv>(worker_, peer, tag, buf, bytes);
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
    worker_->step_all();
    if (beat_timeout_ms_ > 0 && (++progress_calls_ & 15) == 0) heartbeat();
    return moved;
  }

  // Registered only when some peer is on the RMA path (else nothing would use it).
  void add_registered_memory(void* base, size_t bytes, std::weak_ptr<const void> owner) override {
    if (bytes == 0 || std::find(rma_peer_.begin(), rma_peer_.end(), true) == rma_peer_.end()) return;
    worker_->add_region(base, bytes, std::move(owner));
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

  UcxRmaCounters rma_counters() const { return worker_->rma_counters(); }
  std::string endpoint_info(int peer) const { return worker_->endpoint_info(peer); }

  // Publishes the address, connects to every peer and exchanges hellos (see the header).
  void connect(Store& store, const std::string& key_prefix) {
    const int64_t rma_mode = kRmaMode.get();
    worker_->open(rma_mode != 0);
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
    // Large messages by RMA put where the endpoint's RMA lane is native (or when forced).
    // The receiving side assumes the same choice (lane selection is symmetric).
    rma_min_bytes_ = static_cast<size_t>(std::max<int64_t>(kRmaMinBytes.get(), sizeof(RtsHeader)));
    rma_peer_.assign(worker_->world_size(), false);
    for (int peer : peers_) {
      std::string lanes;
      bool native = rma_mode != 0 && worker_->native_rma(peer, &lanes);
      rma_peer_[peer] = rma_mode == 1 || (rma_mode == -1 && native);
      SY_DEBUG("comm", "ucx: rank " << worker_->rank() << " to rank " << peer << ": messages >= " << rma_min_bytes_
                                    << " bytes by " << (rma_peer_[peer] ? "RMA put" : "tagged messages")
                                    << " (SWITCHYARD_COMM_UCX_RMA=" << rma_mode << ", rma lanes: "
                                    << (lanes.empty() ? "none; " : lanes) << (native ? "native" : "not native")
                                    << ")");
    }
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
    // Peers shutting down too say goodbye about now: give their goodbyes a moment to arrive.
    // A peer that said goodbye is closing its endpoint, so a flush towards it could wait for
    // an acknowledgement it never sends (tcp's put waits for one) and fail; outside
    // peer-failure mode UCX prints that failure as an error.
    const auto bye_deadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(kByeWaitMs));
    auto all_said_bye = [&] {
      for (int peer : peers_)
        if (worker_->peer(peer).ep != nullptr && !worker_->failed(peer) && !worker_->said_bye(peer)) return false;
      return true;
    };
    while (!all_said_bye() && Clock::now() < bye_deadline) worker_->progress();
    // Peers' rkeys go before the endpoints they were unpacked on.
    worker_->release_rkeys_and_regions();
    // Flush (everything posted has left this rank), then close without the disconnect
    // handshake, which would wait for the peer to progress.
    std::vector<void*> flushing;
    for (int peer : peers_) {
      PeerState& p = worker_->peer(peer);
      if (p.ep == nullptr || worker_->failed(peer) || worker_->said_bye(peer)) continue;
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
    const UcxRmaCounters& rma = worker_->rma_counters();
    SY_DEBUG("comm", "ucx: rank " << worker_->rank() << " closed its endpoints (RMA path: " << rma.puts_sent
                                  << " messages put, " << rma.bytes_put << " bytes, " << rma.puts_received
                                  << " received, " << rma.receive_registrations << " receive buffers registered "
                                  << "per message, " << rma.rkeys_sent << " rkeys sent, " << rma.rkeys_unpacked
                                  << " region rkeys unpacked)");
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
  std::vector<bool> rma_peer_;  // by rank: large messages to/from it go by RMA put
  size_t rma_min_bytes_ = 0;
  int64_t beat_timeout_ms_ = 0;
  std::vector<Beat> beats_;  // per peers_ entry
  Clock::time_point last_beat_sent_{};
  uint64_t progress_calls_ = 0;
};

}  // namespace

bool ucx_ep_info_has_native_rma(const std::string& ep_info, std::string* lanes) {
  // Lane lines look like "#  lane[1]:  3:rc_mlx5/mlx5_0:1.0 md[2] -> md[2]/ib/sysdev[255] rma_bw#0";
  // over tcp UCX 1.13 opens no RMA lane at all (puts are emulated on the active-message lane).
  std::istringstream in(ep_info);
  bool any = false, all_native = true;
  for (std::string line; std::getline(in, line);) {
    size_t start = line.find("lane[");
    if (start == std::string::npos || line.find(" rma_bw#") == std::string::npos) continue;
    any = true;
    size_t colon = line.find(':', start);
    size_t name_start = line.find_first_not_of(' ', colon + 1);
    size_t name_end = line.find(' ', name_start);
    std::string name = line.substr(name_start, name_end - name_start);  // "3:rc_mlx5/mlx5_0:1.0"
    if (lanes) *lanes += name + "; ";
    if (name.find(":tcp/") != std::string::npos) all_native = false;
  }
  return any && all_native;
}

bool ucx_context_info_is_tcp_only(const std::string& context_info, std::string* resources) {
  // Resource lines look like "#      resource 1  :  md 1  dev 1  flags -- tcp/lo".
  std::istringstream in(context_info);
  bool any_tcp = false, only_tcp = true;
  for (std::string line; std::getline(in, line);) {
    if (line.find("resource ") == std::string::npos) continue;
    size_t flags = line.find("flags ");
    if (flags == std::string::npos) continue;
    size_t name_end = line.find_last_not_of(" \t\r");
    size_t name_start = line.find_last_of(' ', name_end) + 1;
    std::string name = line.substr(name_start, name_end + 1 - name_start);  // "tcp/lo"
    if (resources) *resources += (resources->empty() ? "" : " ") + name;
    std::string tl = name.substr(0, name.find('/'));
    if (tl == "tcp")
      any_tcp = true;
    else if (tl != "self")
      only_tcp = false;
  }
  return any_tcp && only_tcp;
}

const UcxTransport& as_ucx(const Transport& transport, const char* what) {
  const auto* ucx = dynamic_cast<const UcxTransport*>(&transport);
  SY_REQUIRE(ucx != nullptr, what << ": transport " << transport.name() << " is not the UCX transport");
  return *ucx;
}

std::string ucx_endpoint_info(const Transport& transport, int peer) {
  const UcxTransport& ucx = as_ucx(transport, "ucx_endpoint_info");
  SY_REQUIRE(ucx.can_reach(peer), "ucx_endpoint_info: no endpoint to rank " << peer);
  return ucx.endpoint_info(peer);
}

UcxRmaCounters ucx_rma_counters(const Transport& transport) {
  return as_ucx(transport, "ucx_rma_counters").rma_counters();
}

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
