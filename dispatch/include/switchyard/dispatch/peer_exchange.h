// PeerExchange: the one transport seam of the dispatch library.
//
// Dispatch and combine move whole messages between ranks in a few stages; each stage is a
// set of sends and receives of known sizes. This interface is the only thing the exchange
// code needs from a transport, so the same algorithms run over a comm::Communicator
// (make_comm_exchange, isend/irecv), over threads in one process (tests), and later over a
// CUDA transport.
//
// Threading: one exchange at a time per object (post() ... wait() counts as one).
// exchange() blocks until every receive has arrived and every send buffer may be reused;
// post() returns at once and the PendingExchange's wait() does the blocking (buffers belong
// to the exchange until then). A receive's size is an upper bound: the message may be
// shorter (protocols that need the length carry it in the message). Messages between a
// pair of ranks with the same tag arrive in the order they were sent. Sends to this rank
// itself are not allowed (the caller copies locally). Errors: Timeout naming the peers still owed data,
// InvalidArgument on a size mismatch, PeerFailure from the transport.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "switchyard/topology/rank_map.h"

namespace switchyard::comm {
class Communicator;
}

namespace switchyard::dispatch {

struct PeerSend {
  int peer;
  const void* data;
  size_t bytes;
};
struct PeerRecv {
  int peer;
  void* data;
  size_t bytes;
};

class PendingExchange {
 public:
  virtual ~PendingExchange() = default;
  virtual void wait() = 0;  // blocks until all sends and receives of the post finished
};

// Memory that the ranks of one node address directly (the low-latency slot path): every
// rank of the group owns `bytes` zero-filled bytes, and same-node peers map each other's.
// Made collectively by PeerExchange::open_window; unmapped when destroyed. Any thread may
// read and write the memory; ordering between ranks is the caller's (atomics on it).
class PeerWindow {
 public:
  virtual ~PeerWindow() = default;
  // This rank's window (rank == this rank) or a peer's as mapped here; nullptr when the
  // peer cannot be reached through memory (another node, or mapping failed on either side:
  // both sides then agree the pair uses messages).
  virtual uint8_t* at(int rank) = 0;
  // Throws PeerFailure naming `rank` when it is known to be gone (its process exited).
  virtual void check_peer(int rank) = 0;
};

class PeerExchange {
 public:
  virtual ~PeerExchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const topology::RankMap& rank_map() const = 0;
  // Posts every send and receive and returns; tag separates stages.
  virtual std::unique_ptr<PendingExchange> post(const std::vector<PeerSend>& sends, const std::vector<PeerRecv>& recvs,
                                                int tag) = 0;
  // Collective over the group (uses exchange() with tag kWindowTag): a PeerWindow of
  // `bytes` per rank, or nullptr when this exchange has no shared memory (then every rank
  // returns nullptr). Default: POSIX shared memory between the ranks of each node
  // (shm_window.cc; a segment is unlinked as soon as its peers mapped it, so nothing is
  // left behind if a process dies).
  virtual std::unique_ptr<PeerWindow> open_window(size_t bytes);
  // How long a rank waits for a peer's data before a Timeout naming it.
  virtual std::chrono::milliseconds timeout() const { return std::chrono::seconds(60); }
  static constexpr int kWindowTag = 30;
  // post() then wait().
  void exchange(const std::vector<PeerSend>& sends, const std::vector<PeerRecv>& recvs, int tag) {
    post(sends, recvs, tag)->wait();
  }
};

// PeerExchange over a comm::Communicator (isend/irecv with tags kDispatchTagBase + tag).
// Keeps the communicator alive. Defined only when the comm library is built.
constexpr int kDispatchTagBase = 0x5d000;
std::shared_ptr<PeerExchange> make_comm_exchange(std::shared_ptr<comm::Communicator> comm);

}  // namespace switchyard::dispatch
