// Transport: how bytes move between two ranks (the gloo device/pair idea, NCCL's
// ordered transport table).
//
// A Transport connects this rank to a set of peers and moves tagged byte messages.
// Backends: shm/ (POSIX shared memory inside a node), ucx/ (UCX tag or active messages
// between nodes), later cuda_ipc/ and nccl/. The ordered list that picks a backend per peer
// lives in one place (transport/registry.cc): the first backend whose can_reach() says
// yes carries that peer's traffic. Ranks on different (virtual) nodes never share memory.
//
// Matching: a receive matches the send from `peer` with the same `tag`; messages with the
// same (peer, tag) arrive in the order they were posted. The receive's size is an upper
// bound; the real size is reported by the request.
//
// Threading: a Transport is driven by one thread at a time (the communicator's progress
// thread or the caller holding the communicator's lock). Requests are owned by the caller.
// Buffers must stay valid until their request completes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace switchyard::comm {

class TransportRequest {
 public:
  virtual ~TransportRequest() = default;
  // Non-blocking: true once the operation finished. Throws PeerFailure if the peer died.
  virtual bool done() = 0;
  // Bytes actually received (receives) or sent (sends); valid once done().
  virtual size_t bytes() const = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  // True when this backend can carry traffic between this rank and `peer`.
  virtual bool can_reach(int peer) const = 0;
  // Posts a send; never blocks on the peer. The buffer stays untouched until done().
  virtual std::unique_ptr<TransportRequest> isend(int peer, uint64_t tag, const void* buf, size_t bytes) = 0;
  // Posts a receive of at most `bytes` into buf.
  virtual std::unique_ptr<TransportRequest> irecv(int peer, uint64_t tag, void* buf, size_t bytes) = 0;
  // Advances outstanding operations without blocking; returns true if anything moved.
  virtual bool progress() = 0;
  // Throws PeerFailure if a peer is known to be dead (failed connection, missed heartbeat).
  virtual void check_peers() = 0;
  // Blocks up to `max_wait` or until a peer signals new data (shm: a futex doorbell).
  // The default returns at once (the caller then yields). Called without other work ready.
  virtual void wait_for_event(std::chrono::microseconds max_wait) { (void)max_wait; }
  // Wakes a thread blocked in wait_for_event() (a new operation was posted). Any thread.
  virtual void interrupt_wait() {}
  // Marks this rank aborted so peers' check_peers() fail fast (shm header flag). Any thread.
  virtual void announce_abort() {}
  // Memory the communicator registered (alloc_registered) that stays valid while `owner`
  // lives: a transport may prepare it for remote access once (UCX: ucp_mem_map, rkey sent
  // to each peer once) and forget it when `owner` expires. Called by the driving thread.
  virtual void add_registered_memory(void* base, size_t bytes, std::weak_ptr<const void> owner) {
    (void)base, (void)bytes, (void)owner;
  }
};

}  // namespace switchyard::comm
