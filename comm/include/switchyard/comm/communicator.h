// Communicator: a group of ranks with point-to-point and collective operations.
//
// CONTRACT SKETCH (the comm implementation may extend it; dispatch/pipeline/trainer code
// against these signatures). Counts are in elements of `type`; displacements in elements.
// Every operation has a blocking form and an async form returning Work. Several async
// operations may be in flight; collectives match across ranks by issue order.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/types.h"
#include "switchyard/comm/work.h"
#include "switchyard/topology/rank_map.h"

namespace switchyard::comm {

struct InitOptions {
  std::chrono::milliseconds timeout{60000};  // default for every wait
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  // World communicator from the launcher environment (sy-run, torchrun, Open MPI, Slurm,
  // or SY_RENDEZVOUS/SY_TOKEN).
  static std::shared_ptr<Communicator> init(const InitOptions& options = {});

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const topology::RankMap& rank_map() const = 0;  // node of every rank
  int node() const { return rank_map().node_of(rank()); }
  virtual std::chrono::milliseconds timeout() const = 0;

  // Sub-group of the ranks passing the same color, ordered by (key, parent rank).
  // Collective over this communicator. Reuses the parent's connections.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;

  // Point to point (bytes).
  virtual Work isend(const void* buf, size_t bytes, int peer, int tag = 0) = 0;
  virtual Work irecv(void* buf, size_t bytes, int peer, int tag = 0) = 0;
  void send(const void* buf, size_t bytes, int peer, int tag = 0) { isend(buf, bytes, peer, tag).wait(); }
  void recv(void* buf, size_t bytes, int peer, int tag = 0) { irecv(buf, bytes, peer, tag).wait(); }

  // Collectives.
  virtual Work iall_to_all(const void* send, void* recv, size_t count_per_peer, DataType type) = 0;
  virtual Work iall_to_all_v(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                             const size_t* recv_counts, const size_t* recv_displs, DataType type) = 0;
  virtual Work iall_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op) = 0;
  virtual Work iall_gather(const void* send, void* recv, size_t count_per_rank, DataType type) = 0;
  virtual Work ireduce_scatter(const void* send, void* recv, size_t count_per_rank, DataType type, ReduceOp op) = 0;
  virtual Work ibroadcast(void* buf, size_t count, DataType type, int root) = 0;
  virtual Work ibarrier() = 0;

  void all_to_all(const void* s, void* r, size_t n, DataType t) { iall_to_all(s, r, n, t).wait(); }
  void all_to_all_v(const void* s, const size_t* sc, const size_t* sd, void* r, const size_t* rc, const size_t* rd,
                    DataType t) {
    iall_to_all_v(s, sc, sd, r, rc, rd, t).wait();
  }
  void all_reduce(const void* s, void* r, size_t n, DataType t, ReduceOp op) { iall_reduce(s, r, n, t, op).wait(); }
  void all_gather(const void* s, void* r, size_t n, DataType t) { iall_gather(s, r, n, t).wait(); }
  void reduce_scatter(const void* s, void* r, size_t n, DataType t, ReduceOp op) {
    ireduce_scatter(s, r, n, t, op).wait();
  }
  void broadcast(void* b, size_t n, DataType t, int root) { ibroadcast(b, n, t, root).wait(); }
  void barrier() { ibarrier().wait(); }

  // Tears the communicator down without waiting for peers; pending Work fails.
  virtual void abort(const std::string& reason) = 0;
};

// The EP, PP and DP sub-groups of a 3-D layout (world = dp * pp * ep; EP innermost so an
// EP group stays inside a node where it fits).
struct ParallelGroups {
  std::shared_ptr<Communicator> ep, pp, dp;
};
ParallelGroups make_parallel_groups(Communicator& world, int ep, int pp, int dp);

}  // namespace switchyard::comm
