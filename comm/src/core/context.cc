// Context: op engine and progress thread (see context.h).
#include "core/context.h"

#include <sched.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "switchyard/common/error.h"
#include "switchyard/common/log.h"
#include "switchyard/common/param.h"

namespace switchyard::comm::detail {
namespace {

const Param<int64_t> kSpinIters("COMM_SPIN_ITERS", 2000, "iterations",
                                "busy polls before a waiting thread starts to yield");
const Param<int64_t> kSpinItersOversubscribed("COMM_SPIN_ITERS_OVERSUBSCRIBED", 1, "iterations",
                                              "busy polls before yielding when the node has more ranks than CPUs");
const Param<int64_t> kYieldItersOversubscribed("COMM_YIELD_ITERS_OVERSUBSCRIBED", 1000, "iterations",
                                               "sched_yield polls before sleeping when the node has more ranks "
                                               "than CPUs (the other ranks need the CPU, not a wake-up)");
const Param<int64_t> kYieldIters("COMM_YIELD_ITERS", 50, "iterations",
                                 "sched_yield polls before a waiting thread sleeps on the futex");
const Param<int64_t> kYieldItersRemote("COMM_YIELD_ITERS_REMOTE", 0, "iterations",
                                       "sched_yield polls before a waiting thread sleeps when the job has ranks "
                                       "on other nodes (UCX) and this host is not oversubscribed");
const Param<int64_t> kSleepUs("COMM_SLEEP_US", 1000, "microseconds", "longest futex sleep of a waiting thread");
const Param<int64_t> kMixedWaitUs("COMM_MIXED_WAIT_US", 20, "microseconds",
                                  "longest sleep on UCX's event fd of a waiter that also polls shared memory");
const Param<bool> kInline("COMM_INLINE", true, "bool",
                          "small one-node exchanges run on the calling thread through the shm rings "
                          "(no op objects, no progress-thread hand-off)");
const Param<int64_t> kInlineWaitUs("COMM_INLINE_WAIT_US", 1000, "microseconds",
                                   "longest poll of a blocking inline exchange before it becomes an ordinary "
                                   "op (futex sleeps, peer checks, timeout messages)");
const Param<int64_t> kPeerCheckMs("COMM_PEER_CHECK_MS", 20, "milliseconds", "interval of dead-peer checks");

inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

void append_field(std::string& s, const char* key, int64_t value) {
  if (s.back() != '(') s += ", ";
  s += key;
  s += '=';
  s += std::to_string(value);
}

std::string rank_list(const std::set<int>& ranks) {
  std::ostringstream os;
  os << "ranks {";
  bool first = true;
  for (int r : ranks) {
    os << (first ? "" : ", ") << r;
    first = false;
  }
  os << "}";
  return os.str();
}

}  // namespace

std::pair<ScratchPool::Buffer, size_t> ScratchPool::take(size_t bytes) {
  constexpr size_t kSmall = 64 << 10;  // small buffers come from malloc directly
  if (bytes >= kSmall) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i)
      if (free_[i].second >= bytes && free_[i].second <= 2 * bytes &&
          (best == free_.size() || free_[i].second < free_[best].second))
        best = i;
    if (best < free_.size()) {
      auto out = std::move(free_[best]);
      free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
      return out;
    }
  }
  return {Buffer(new uint8_t[bytes ? bytes : 1]), bytes};
}

void ScratchPool::give(Buffer buffer, size_t bytes) {
  constexpr size_t kSmall = 64 << 10, kMaxBuffers = 16;
  if (bytes < kSmall) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.size() >= kMaxBuffers) free_.erase(free_.begin());  // drop the oldest
  free_.emplace_back(std::move(buffer), bytes);
}

std::string OpName::str() const {
  std::string s = op;
  s += '(';
  for (const Field& f : fields)
    if (f.key) append_field(s, f.key, f.value);
  for (const char* t : {type, extra})
    if (t) {
      if (s.back() != '(') s += ", ";
      s += t;
    }
  s += ") on comm " + std::to_string(comm_id);
  if (collective) s += " (op " + std::to_string(seq) + ")";
  return s;
}

Context::Context(Setup s)
    : rank_(s.rank),
      rank_map_(std::move(s.rank_map)),
      timeout_(s.timeout),
      job_uid_(std::move(s.job_uid)),
      store_(std::move(s.store)),
      shm_(std::move(s.shm)),
      remote_(std::move(s.remote)),
      route_(std::move(s.route)) {
  unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  // Virtual nodes share the host's CPUs: count every rank on this host.
  int on_host = std::max(rank_map_.local_size(rank_), s.ranks_on_host);
  bool oversubscribed = static_cast<unsigned>(on_host) > cpus;
  spin_iters_ = oversubscribed ? kSpinItersOversubscribed.get() : kSpinIters.get();
  // With peers on other nodes a waiter that stopped spinning sleeps on UCX's event fd (a
  // message wakes it) rather than yielding: on a loaded host a yield hands the CPU to other
  // processes for a whole time slice (measured: 2 virtual nodes, 16-byte all_to_all 270 us
  // with 50 yields, 5 us with none, load 15 on 2 cores).
  yield_iters_ = oversubscribed ? kYieldItersOversubscribed.get()
                                : (remote_ ? kYieldItersRemote.get() : kYieldIters.get());
  SY_DEBUG("comm", "waiters: " << on_host << " ranks on this host, " << cpus << " CPUs"
                               << (oversubscribed ? " (oversubscribed)" : "") << ": spin " << spin_iters_
                               << ", yield " << yield_iters_ << ", then sleep");
  if (shm_) transports_.push_back(shm_.get());
  if (remote_) transports_.push_back(remote_.get());
}

Context::~Context() { shutdown(); }

void Context::start() {
  progress_thread_ = std::thread([this] { progress_loop(); });
}

void Context::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    fail_all_locked(std::make_exception_ptr(
        InvalidArgument("communicator destroyed while the operation was pending", __FILE__, __LINE__)));
  }
  cv_.notify_all();
  for (auto* t : transports_) t->interrupt_wait();
  if (progress_thread_.joinable()) progress_thread_.join();
  if (shm_) shm_->announce_closed();  // no more heartbeats from here on
}

void Context::register_region(const std::shared_ptr<SharedRegion>& region) {
  std::lock_guard<std::mutex> lock(mu_);
  shm_->add_region(region);
  if (remote_) remote_->add_registered_memory(region->base(), region->bytes(), region);
}

uint32_t Context::next_comm_id() {
  std::lock_guard<std::mutex> lock(mu_);
  return next_comm_id_;
}

void Context::reserve_comm_ids(uint32_t next) {
  std::lock_guard<std::mutex> lock(mu_);
  next_comm_id_ = std::max(next_comm_id_, next);
}

Work Context::post(std::unique_ptr<Op> op) {
  auto work = op->work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) std::rethrow_exception(failed_);
    ops_.push_back(std::move(op));
    progress_locked();
    pending_ops_.store(ops_.size(), std::memory_order_release);
  }
  // A blocking call waits (and drives progress) at once: no need to wake anybody.
  if (!work->finished() && !BlockingCall::active()) {
    cv_.notify_one();
    for (auto* t : transports_) t->interrupt_wait();
  }
  return Work(work);
}

size_t Context::poll_inline_locked(const OpName& name, InlineStep& step) {
  size_t finished = 0;
  for (size_t i = 0; i < step.transfers.size(); ++i) {
    if (step.done[i]) continue;
    const Transfer& t = step.transfers[i];
    if (t.is_send) {
      if (!shm_->send_inline(t.peer, t.tag, t.buf, t.bytes)) continue;
    } else {
      int64_t got = shm_->recv_inline(t.peer, t.tag, t.buf, t.bytes);
      if (got < 0) continue;
      if (t.exact && static_cast<size_t>(got) != t.bytes)
        SY_THROW(InvalidArgument, name.str() << ": rank " << t.peer << " sent " << got
                                             << " bytes where this rank expects " << t.bytes
                                             << " (counts or sizes differ between ranks; "
                                                "SWITCHYARD_COMM_CHECK_ARGS=1 cross-checks them)");
    }
    step.done[i] = 1;
    ++finished;
  }
  return finished;
}

bool Context::run_inline(const OpName& name, InlineStep& step, bool blocking, Work& out, std::function<void()> then) {
  if (!shm_ || !kInline.get()) return false;
  const size_t n = step.transfers.size();
  for (const Transfer& t : step.transfers)
    if (route_[static_cast<size_t>(t.peer)] != shm_.get() || t.bytes > shm_->inline_max()) return false;
  step.done.assign(n, 0);
  size_t left = n;
  // A receive error (size mismatch) leaves peers mid-exchange: like an op that fails with
  // transfers outstanding, it breaks the context.
  auto poll_locked = [&] {
    try {
      left -= poll_inline_locked(name, step);
    } catch (...) {
      fail_all_locked(std::current_exception());
      throw;
    }
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) std::rethrow_exception(failed_);
    if (!ops_.empty()) return false;
    poll_locked();
  }
  if (left > 0 && blocking) {
    // Poll on this thread (spin, then yield) while the peers are about to answer; a long
    // wait becomes an op below, whose wait() sleeps on the futex and checks peers.
    auto start = std::chrono::steady_clock::now();
    auto limit = std::chrono::microseconds(kInlineWaitUs.get());
    int64_t idle = 0;
    unsigned iter = 0;
    while (left > 0) {
      {
        std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
        if (lock.owns_lock()) {
          if (failed_) std::rethrow_exception(failed_);
          size_t before = left;
          poll_locked();
          if (left < before) idle = 0;
        }
      }
      if (left == 0) break;
      if ((++iter & 63) == 0 && std::chrono::steady_clock::now() - start > limit) break;
      if (++idle < spin_iters_)
        cpu_relax();
      else if (idle < spin_iters_ + yield_iters_)
        sched_yield();
      else
        break;
    }
  }
  if (left == 0) {
    if (then) then();
    out = Work();
    return true;
  }
  // The rest becomes an op that polls the rings like this thread did.
  auto op = std::make_unique<Op>();
  op->pool = &scratch_pool_;
  op->name = name;
  op->work = std::make_shared<WorkState>(shared_from_this(), name, timeout_);
  op->inline_rest = std::make_unique<InlineStep>(step);
  op->inline_rest->then = std::move(then);
  op->posted = true;
  bool sends_left = false;
  for (size_t i = 0; i < n; ++i) sends_left |= !step.done[i] && step.transfers[i].is_send;
  auto work = op->work;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) std::rethrow_exception(failed_);
    ops_.push_back(std::move(op));
    progress_locked();
    pending_ops_.store(ops_.size(), std::memory_order_release);
  }
  // Only receives left: no peer waits for this rank, so the progress thread need not be
  // woken; it finds the op on its next pass (at most 2 ms), and wait()/test() drive it at once.
  if (!work->finished() && sends_left && !blocking) {
    cv_.notify_one();
    for (auto* t : transports_) t->interrupt_wait();
  }
  out = Work(work);
  return true;
}

void Context::poll() {
  if (pending_ops_.load(std::memory_order_acquire) == 0) return;
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (lock.owns_lock()) progress_locked();
}

bool Context::advance_ops_locked(bool inline_only, bool& moved) {
  for (auto it = ops_.begin(); it != ops_.end();) {
    Op& op = **it;
    if (inline_only && !op.inline_rest) {
      ++it;
      continue;
    }
    try {
      moved |= advance(op);
    } catch (...) {
      if (op.posted) {
        // Failed with transfers outstanding: peers are mid-operation and messages may
        // still land in its buffers, so the whole context is broken (abort and re-init).
        fail_all_locked(std::current_exception());
        moved = true;
        return false;
      }
      // Failed between steps (a local check): only this operation fails.
      op.work->finish(std::current_exception());
      it = ops_.erase(it);
      moved = true;
      continue;
    }
    if (op.work->finished())
      it = ops_.erase(it);
    else
      ++it;
  }
  return true;
}

bool Context::progress_locked() {
  // A failed context freezes its transports: nothing may write into user buffers any more.
  if (failed_) return false;
  bool moved = false;
  // Ring-polling ops (the rest of inline exchanges) first: they take their messages
  // straight from the ring heads, before the transports' pass would move them to the
  // unexpected list (an allocation and a copy each).
  if (!advance_ops_locked(true, moved)) return true;
  for (auto* t : transports_) moved |= t->progress();
  if (!advance_ops_locked(false, moved)) return true;
  pending_ops_.store(ops_.size(), std::memory_order_release);
  if (!ops_.empty() && (++progress_calls_ & 63) == 0) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_check_ > std::chrono::milliseconds(kPeerCheckMs.get())) {
      last_check_ = now;
      check_peers_locked();
    }
  }
  return moved;
}

void Context::check_peers_locked() {
  for (auto* t : transports_) {
    try {
      t->check_peers();
    } catch (const Error& e) {
      // Deliver what already arrived before failing the rest.
      for (auto* u : transports_) u->progress();
      for (auto& op : ops_) {
        try {
          advance(*op);
        } catch (...) {
        }
      }
      SY_WARN("comm", "peer failure: " << e.message());
      fail_all_locked(std::current_exception());
      return;
    }
  }
}

bool Context::advance(Op& op) {
  bool moved = false;
  if (op.inline_rest) {
    InlineStep& rest = *op.inline_rest;
    moved = poll_inline_locked(op.name, rest) > 0;
    for (uint8_t d : rest.done)
      if (!d) return moved;
    auto then = std::move(rest.then);
    op.inline_rest.reset();
    op.posted = false;
    if (then) then();
    op.work->finish(nullptr);
    return true;
  }
  while (!op.steps.empty()) {
    Step& step = op.steps.front();
    if (!op.posted) {
      op.requests.clear();
      op.requests.reserve(step.transfers.size());
      for (const Transfer& t : step.transfers) {
        Transport* tr = route_[static_cast<size_t>(t.peer)];
        op.requests.push_back(t.is_send ? tr->isend(t.peer, t.tag, t.buf, t.bytes)
                                        : tr->irecv(t.peer, t.tag, t.buf, t.bytes));
      }
      op.posted = true;
      moved = true;
      if (step.after_post) step.after_post(op);
    }
    for (auto& r : op.requests)
      if (!r->done()) return moved;
    for (size_t i = 0; i < step.transfers.size(); ++i) {
      const Transfer& t = step.transfers[i];
      if (!t.is_send && t.exact && op.requests[i]->bytes() != t.bytes)
        SY_THROW(InvalidArgument, op.name.str() << ": rank " << t.peer << " sent " << op.requests[i]->bytes()
                                          << " bytes where this rank expects " << t.bytes
                                          << " (counts or sizes differ between ranks; "
                                             "SWITCHYARD_COMM_CHECK_ARGS=1 cross-checks them)");
    }
    op.requests.clear();
    auto then = std::move(step.then);
    op.steps.pop_front();
    op.posted = false;
    if (then) then(op);
    moved = true;
  }
  op.work->finish(nullptr);
  return true;
}

std::string Context::waiting_for_locked(const Op& op) const {
  std::set<int> recvs, sends;
  if (op.inline_rest) {
    const InlineStep& rest = *op.inline_rest;
    for (size_t i = 0; i < rest.transfers.size(); ++i)
      if (!rest.done[i]) (rest.transfers[i].is_send ? sends : recvs).insert(rest.transfers[i].peer);
    if (!recvs.empty()) return "data from " + rank_list(recvs);
    return rank_list(sends) + " to take this rank's data";
  }
  if (op.steps.empty() || !op.posted) return "no peer (not started)";
  const Step& step = op.steps.front();
  for (size_t i = 0; i < step.transfers.size() && i < op.requests.size(); ++i) {
    bool done = false;
    try {
      done = op.requests[i]->done();
    } catch (...) {
      done = true;
    }
    if (!done) (step.transfers[i].is_send ? sends : recvs).insert(step.transfers[i].peer);
  }
  if (!recvs.empty()) return "data from " + rank_list(recvs);
  if (!sends.empty()) return rank_list(sends) + " to take this rank's data";
  return "local work";
}

void Context::fail_all_locked(std::exception_ptr error) {
  if (!failed_) failed_ = error;
  for (auto& op : ops_) op->work->finish(error);
  ops_.clear();
  pending_ops_.store(0, std::memory_order_release);
}

void Context::abort(const std::string& reason) {
  for (auto* t : transports_) t->announce_abort();
  {
    std::lock_guard<std::mutex> lock(mu_);
    fail_all_locked(std::make_exception_ptr(InvalidArgument("communicator aborted: " + reason, __FILE__, __LINE__)));
  }
  SY_WARN("comm", "communicator aborted: " << reason);
  cv_.notify_all();
}

void Context::backoff(int& idle) {
  ++idle;
  int64_t spin = spin_iters_, yield = yield_iters_;
  if (idle < spin) {
    cpu_relax();
  } else if (idle < spin + yield) {
    sched_yield();
  } else if (transports_.size() == 1) {
    transports_[0]->wait_for_event(std::chrono::microseconds(kSleepUs.get()));
  } else {
    // Shared memory and UCX: sleep on UCX's event fd for a short slice, so a network
    // message wakes this thread at once and shm data is seen within the slice (a futex and
    // an fd cannot be waited on together).
    remote_->wait_for_event(std::chrono::microseconds(kMixedWaitUs.get()));
  }
}

void Context::wait(WorkState& w, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // While someone waits here, the progress thread stands aside (this thread drives).
  struct WaiterGuard {
    Context* c;
    explicit WaiterGuard(Context* ctx) : c(ctx) { c->waiters_.fetch_add(1); }
    ~WaiterGuard() {
      c->waiters_.fetch_sub(1);
      // Hand the remaining ops back to the progress thread. With none left, it need not
      // wake (a blocking call would otherwise cost a futex wake and a context switch on
      // every call); a later async post wakes it itself, and it polls every 2 ms anyway.
      if (c->pending_ops_.load(std::memory_order_acquire) > 0) c->cv_.notify_one();
    }
  } guard(this);
  int idle = 0;
  unsigned iter = 0;
  while (!w.finished()) {
    bool moved = false;
    {
      std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
      if (lock.owns_lock()) moved = progress_locked();
    }
    if (w.finished()) break;
    if ((++iter & 63) == 0 && std::chrono::steady_clock::now() >= deadline) {
      std::string waiting = "an unknown peer";
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& op : ops_)
          if (op->work.get() == &w) waiting = waiting_for_locked(*op);
      }
      if (w.finished()) break;
      SY_THROW(Timeout, w.name().str() << ": not finished after " << timeout.count() << " ms; waiting for " << waiting);
    }
    if (moved)
      idle = 0;
    else
      backoff(idle);
  }
  w.rethrow_if_failed();
}

void Context::progress_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  int idle = 0;
  while (!stop_) {
    if (shm_) shm_->beat();  // peers' hung-peer check (shm heartbeat)
    // UCX heartbeats go out from progress(): drive it while idle too (nobody else does).
    if (remote_ && ops_.empty() && waiters_.load() == 0 && !failed_) remote_->progress();
    if (ops_.empty() || waiters_.load() > 0) {
      cv_.wait_for(lock, std::chrono::milliseconds(2));
      idle = 0;
      continue;
    }
    bool moved = progress_locked();
    lock.unlock();
    if (moved)
      idle = 0;
    else
      backoff(idle);
    lock.lock();
  }
}

}  // namespace switchyard::comm::detail
