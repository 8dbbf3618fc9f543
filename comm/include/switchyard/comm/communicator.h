// Communicator: a group of ranks with point-to-point and collective operations.
//
// Counts are in elements of `type`; displacements in elements. Every operation has a
// blocking form and an async form returning Work. Several async operations may be in
// flight; collectives match across ranks by issue order.
//
// THREADING MODEL
// - One progress thread per world context (the world communicator and every communicator
//   split from it share it and the transports). It advances posted operations, so async
//   work completes while the caller computes without calling the library.
// - A thread blocked in Work::wait() drives progress itself (the progress thread stands
//   aside), which keeps small-message latency low.
// - Operations on one communicator must be issued by one thread at a time and in the same
//   order on every member (that order is how they match). Different communicators of the
//   same context may be used from different threads. Work handles may be tested/waited
//   from any thread. split() and make_parallel_groups() are collective: issue them like
//   any other collective.
// - Buffers passed to an async operation belong to the library until its Work finishes.
// - Internal lock order: Communicator issue lock -> context lock -> transport. The context
//   lock is never held while user code runs.
//
// CHOICE OF ALGORITHM (logged at debug level, subsystem comm)
// - all_reduce: reduce-scatter + all-gather, every chunk reduced by one rank in fixed rank
//   order (bitwise identical everywhere, run to run; bf16 accumulates in fp32). With more
//   than one node, equal ranks per node and >= SWITCHYARD_COMM_HIER_MIN_BYTES it is
//   hierarchical: inside the node, then across nodes between rail peers, then inside.
// - all_to_all(_v), all_gather, broadcast, barrier: direct exchange with every peer.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/launch_env.h"
#include "switchyard/comm/types.h"
#include "switchyard/comm/work.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::comm {

struct InitOptions {
  std::chrono::milliseconds timeout{60000};  // default for every wait (and for bootstrap)
};

// One entry of a batched send/receive (batch_send_recv).
struct P2POp {
  enum class Kind { kSend, kRecv };
  Kind kind = Kind::kSend;
  void* buf = nullptr;  // const for sends
  size_t bytes = 0;     // sends: exact size; receives: upper bound
  int peer = 0;         // rank in this communicator
  int tag = 0;          // in [0, 2^27)
};

// Memory from alloc_registered(): placed in shared memory that the other ranks of the node
// map, so the transports move it without staging copies (a receiver reads a registered
// send buffer directly with streaming stores). Valid while the Communicator that made it is
// alive. Usable as a send or receive buffer of any operation; others work as well, via CMA.
class RegisteredBuffer {
 public:
  virtual ~RegisteredBuffer() = default;
  virtual void* data() = 0;
  virtual size_t bytes() const = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // World communicator from the launcher environment (sy-run, torchrun, Open MPI, Slurm,
  // or SY_RENDEZVOUS/SY_TOKEN).
  // Blocking and collective over all ranks; a rank that never arrives makes the others
  // fail after options.timeout with a Timeout listing the missing ranks. Environment
  // precedence: launch_env.h.
  static std::shared_ptr<Communicator> init(const InitOptions& options = {});
  // Same, from an explicit LaunchEnv.
  static std::shared_ptr<Communicator> init(const LaunchEnv& env, const InitOptions& options = {});

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const topology::RankMap& rank_map() const = 0;  // node of every rank
  int node() const { return rank_map().node_of(rank()); }
  virtual std::chrono::milliseconds timeout() const = 0;
  // World rank of each member of this communicator (index = rank here).
  virtual const std::vector<int>& world_ranks() const = 0;
  // "comm 3 (rank 1 of 4, world ranks {0,2,4,6})".
  virtual std::string describe() const = 0;

  // Sub-group of the ranks passing the same color, ordered by (key, parent rank).
  // Collective over this communicator (blocking). Reuses the parent's connections (a new
  // context id in the message tags). A negative color returns nullptr (not a member).
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;

  // Point to point (bytes).
  virtual Work isend(const void* buf, size_t bytes, int peer, int tag = 0) = 0;
  virtual Work irecv(void* buf, size_t bytes, int peer, int tag = 0) = 0;
  void send(const void* buf, size_t bytes, int peer, int tag = 0) {
    detail::BlockingCall b;
    isend(buf, bytes, peer, tag).wait();
  }
  void recv(void* buf, size_t bytes, int peer, int tag = 0) {
    detail::BlockingCall b;
    irecv(buf, bytes, peer, tag).wait();
  }
  // All entries posted at once; the Work finishes when all have (ncclGroupStart/End idea).
  virtual Work ibatch_send_recv(const std::vector<P2POp>& ops) = 0;
  void batch_send_recv(const std::vector<P2POp>& ops) {
    detail::BlockingCall b;
    ibatch_send_recv(ops).wait();
  }

  // Shared memory the transports use without staging copies (see RegisteredBuffer).
  // Local (not collective); `bytes` > 0.
  virtual std::shared_ptr<RegisteredBuffer> alloc_registered(size_t bytes) = 0;

  // Collectives.
  virtual Work iall_to_all(const void* send, void* recv, size_t count_per_peer, DataType type) = 0;
  virtual Work iall_to_all_v(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                             const size_t* recv_counts, const size_t* recv_displs, DataType type) = 0;
  virtual Work iall_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op) = 0;
  virtual Work iall_gather(const void* send, void* recv, size_t count_per_rank, DataType type) = 0;
  virtual Work ireduce_scatter(const void* send, void* recv, size_t count_per_rank, DataType type, ReduceOp op) = 0;
  virtual Work ibroadcast(void* buf, size_t count, DataType type, int root) = 0;
  virtual Work ibarrier() = 0;

  void all_to_all(const void* s, void* r, size_t n, DataType t) {
    detail::BlockingCall b;
    iall_to_all(s, r, n, t).wait();
  }
  void all_to_all_v(const void* s, const size_t* sc, const size_t* sd, void* r, const size_t* rc, const size_t* rd,
                    DataType t) {
    detail::BlockingCall b;
    iall_to_all_v(s, sc, sd, r, rc, rd, t).wait();
  }
  void all_reduce(const void* s, void* r, size_t n, DataType t, ReduceOp op) {
    detail::BlockingCall b;
    iall_reduce(s, r, n, t, op).wait();
  }
  void all_gather(const void* s, void* r, size_t n, DataType t) {
    detail::BlockingCall b;
    iall_gather(s, r, n, t).wait();
  }
  void reduce_scatter(const void* s, void* r, size_t n, DataType t, ReduceOp op) {
    detail::BlockingCall b;
    ireduce_scatter(s, r, n, t, op).wait();
  }
  void broadcast(void* buf, size_t n, DataType t, int root) {
    detail::BlockingCall b;
    ibroadcast(buf, n, t, root).wait();
  }
  void barrier() {
    detail::BlockingCall b;
    ibarrier().wait();
  }

  // Tears the communicator's context down without waiting for peers: pending and later
  // Work fail with the reason; local peers see the abort at once, others at their next
  // failure check. Never blocks. Any thread.
  virtual void abort(const std::string& reason) = 0;
};

// The EP, PP and DP sub-groups of a 3-D layout. world.size() = pp * dp * ep, laid out
// world rank = (pp_index * dp + dp_index) * ep + ep_index: EP innermost so an EP group
// stays inside a node where it fits, PP outermost. Collective over `world`.
struct ParallelGroups {
  std::shared_ptr<Communicator> ep, pp, dp;
};
ParallelGroups make_parallel_groups(Communicator& world, int ep, int pp, int dp);

}  // namespace switchyard::comm
