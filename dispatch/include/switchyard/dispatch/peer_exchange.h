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

#include <cstddef>
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

class PeerExchange {
 public:
  virtual ~PeerExchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const topology::RankMap& rank_map() const = 0;
  // Posts every send and receive and returns; tag separates stages.
  virtual std::unique_ptr<PendingExchange> post(const std::vector<PeerSend>& sends, const std::vector<PeerRecv>& recvs,
                                                int tag) = 0;
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
