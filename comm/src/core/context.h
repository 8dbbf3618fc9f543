// Context: what the world communicator and all communicators split from it share — the
// transports (one per peer, chosen by the registry), the posted operations, and the
// progress thread that advances them.
//
// Locking: mu_ guards ops_, the transports and every Op. It is taken by the progress
// thread, by threads posting or waiting, never while user code runs. A thread waiting in
// wait() drives progress itself; the progress thread parks while someone waits.
//
// Inline path (run_inline): a one-step exchange of small messages with ranks of this node
// runs on the calling thread straight through the shared-memory rings: no Op, no request
// objects, no progress-thread wake-up. It sends the same slots with the same tags as the
// op path, so peers may take either path for the same collective.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/op.h"
#include "core/work_state.h"
#include "switchyard/comm/store.h"
#include "switchyard/comm/transport/transport.h"
#include "switchyard/comm/work.h"
#include "switchyard/topology/rank_map.h"
#include "transport/shm/shm_transport.h"

namespace switchyard::comm::detail {

class Context : public std::enable_shared_from_this<Context> {
 public:
  struct Setup {
    int rank = 0;
    topology::RankMap rank_map{std::vector<int>{0}};
    std::unique_ptr<Store> store;
    std::unique_ptr<ShmTransport> shm;            // ranks on this node (and self)
    std::unique_ptr<Transport> remote;            // ranks on other nodes (may be null)
    std::vector<Transport*> route;                // per world rank
    std::string job_uid;
    std::chrono::milliseconds timeout{60000};
    // Ranks of the job on this host (all virtual nodes of it): with more than the CPUs,
    // waiters yield at once instead of spinning. 0: the ranks of this rank's node.
    int ranks_on_host = 0;
  };
  explicit Context(Setup setup);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Starts the progress thread (after construction, once the shared_ptr exists).
  void start();
  // Stops the progress thread and fails pending work ("communicator destroyed").
  void shutdown();

  int rank() const { return rank_; }
  int size() const { return rank_map_.size(); }
  const topology::RankMap& rank_map() const { return rank_map_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  const std::string& job_uid() const { return job_uid_; }
  ShmTransport& shm() { return *shm_; }

  // Queues `op` and posts its first step; returns its Work. Throws if the context failed.
  Work post(std::unique_ptr<Op> op);
  // Waits for `w` driving progress; throws Timeout naming the ranks still awaited.
  void wait(WorkState& w, std::chrono::milliseconds timeout);
  // Runs `step` on the inline path when it applies: every transfer goes to a rank on this
  // node through shared memory and fits a ring slot, the inline path is on
  // (SWITCHYARD_COMM_INLINE) and no op is pending. Sends go out at once and receives that
  // already arrived are taken; a blocking caller then polls for the rest for a short while
  // (spin, then yield, at most SWITCHYARD_COMM_INLINE_WAIT_US). What is still missing
  // becomes an op that keeps polling the rings (Op::inline_rest; no transport requests),
  // posted without waking the progress thread when all sends went out (no peer waits for
  // this rank then; the thread finds it within 2 ms), returned in `out`; a finished exchange
  // leaves `out` empty (finished). Returns false when the inline path does not apply (the
  // caller posts the full op). Throws like an op (failed context, size mismatch).
  // `then` (may be empty) runs once every transfer is done: here, or when the op is.
  bool run_inline(const OpName& name, InlineStep& step, bool blocking, Work& out, std::function<void()> then = {});
  // One progress pass if the context lock is free and ops are pending (Work::test()).
  void poll();
  // Fails every pending and future op with `reason`; tells local peers. Never blocks.
  void abort(const std::string& reason);

  ScratchPool& scratch_pool() { return scratch_pool_; }

  // Registers shared memory with the shm transport (under the context lock).
  void register_region(const std::shared_ptr<SharedRegion>& region);

  // Context ids for split(): the next id not yet used by this rank.
  uint32_t next_comm_id();
  void reserve_comm_ids(uint32_t next);

 private:
  bool progress_locked();
  // Advances ops_ (only those with inline_rest when `inline_only`), erasing finished ones;
  // false when an op broke the context (fail_all_locked ran).
  bool advance_ops_locked(bool inline_only, bool& moved);
  // Inline path: tries every transfer of `step` not yet done; returns how many finished.
  size_t poll_inline_locked(const OpName& name, InlineStep& step);
  bool advance(Op& op);
  void check_peers_locked();
  void fail_all_locked(std::exception_ptr error);
  void backoff(int& idle);
  void progress_loop();
  std::string waiting_for_locked(const Op& op) const;

  int rank_;
  topology::RankMap rank_map_;
  std::chrono::milliseconds timeout_;
  std::string job_uid_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ShmTransport> shm_;
  std::unique_ptr<Transport> remote_;
  std::vector<Transport*> route_;
  std::vector<Transport*> transports_;

  ScratchPool scratch_pool_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::unique_ptr<Op>> ops_;
  std::exception_ptr failed_;
  bool stop_ = false;
  std::atomic<int> waiters_{0};
  std::atomic<size_t> pending_ops_{0};  // ops_.size(), readable without mu_
  std::chrono::steady_clock::time_point last_check_{};
  uint64_t progress_calls_ = 0;
  int64_t spin_iters_ = 0;   // busy polls before yielding (fewer when oversubscribed)
  int64_t yield_iters_ = 0;  // yields before the futex sleep (more when oversubscribed)
  uint32_t next_comm_id_ = 1;
  std::thread progress_thread_;
};

}  // namespace switchyard::comm::detail
