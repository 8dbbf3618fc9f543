// Shared-memory transport between the ranks of one node (private to comm).
//
// Each rank creates one POSIX shared-memory segment holding a header (pid, futex doorbell,
// run state) and one inbound ring per local rank (itself included). A ring is a
// single-producer single-consumer array of fixed slots with an atomic `full` flag: the
// sender writes a slot and sets the flag, the receiver polls the flag (no system call when
// data is ready), copies out and clears it.
// - Messages up to the eager limit travel inline in one slot (two copies, tiny latency).
// - Larger messages send a request-to-send with the sender's address; the receiver copies
//   once, straight from the sender's memory with process_vm_readv (cross-memory attach),
//   or from a registered (shared) buffer with streaming stores, then answers a FIN slot.
// - Unmatched arrivals are moved out of the ring into an unexpected list, so a ring never
//   stays blocked by a message nobody has asked for yet.
// - A waiting thread sleeps on the futex doorbell in its own header; senders wake it.
// - Peers are watched with pidfds: a peer that exits without closing fails the job with
//   PeerFailure; one that closed cleanly fails only the requests that still need it.
// - Heartbeats: each rank's progress thread bumps a counter in its header; a running peer
//   whose counter stands still for SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS is hung or stopped
//   and fails the job with PeerFailure naming it.
// Threading: driven by one thread at a time (the Context lock); wait_for_event,
// interrupt_wait and announce_abort may be called from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/store.h"
#include "switchyard/comm/transport/transport.h"

namespace switchyard::comm::detail {

// Registered memory: a shared segment any local rank can map by name. The shm transport
// recognises send buffers inside such a segment and lets the receiver read them directly.
// Unmapped and unlinked when destroyed.
class SharedRegion {
 public:
  SharedRegion(std::string name, size_t bytes);
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  const std::string& name() const { return name_; }
  void* base() const { return base_; }
  size_t bytes() const { return bytes_; }

 private:
  std::string name_;
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

class ShmTransport : public Transport {
 public:
  // Makes sends from inside `region` use the direct (registered) path. Keeps a weak ref.
  virtual void add_region(const std::shared_ptr<SharedRegion>& region) = 0;
  // Prefix for region names of this job ("/sy-<uid>-<rank>").
  virtual std::string region_prefix() const = 0;
  // Bumps this rank's heartbeat counter in its segment (the progress thread calls it every
  // loop, at least every few ms). Any thread; one relaxed atomic add.
  virtual void beat() = 0;
  // Marks this rank closed (its progress thread stopped, so no more heartbeats) while the
  // transport object may live on a little (Work handles). Any thread.
  virtual void announce_closed() = 0;

  // ---- inline path (small messages moved by the calling thread, no request objects) ----
  // Largest message that travels inline in one ring slot.
  virtual size_t inline_max() const = 0;
  // Writes an eager message straight into the peer's ring. False (nothing sent) when it
  // does not fit a slot, the ring is full or sends to that peer are queued: try again
  // later (or use isend()). Same wire format as isend(), so a receiver may take it with
  // irecv() or recv_inline(). PeerFailure when the peer closed and exited.
  virtual bool send_inline(int peer, uint64_t tag, const void* buf, size_t bytes) = 0;
  // Takes the message (peer, tag) if it has arrived (unexpected list or ring head) into
  // buf (at most cap bytes); returns its size, or -1 when it is not there yet. Messages of
  // other tags at the ring head are moved aside as by progress(). Throws InvalidArgument
  // when the message is larger than cap, PeerFailure when the peer closed and exited. Never used for a (peer, tag) that also has an
  // irecv() posted.
  virtual int64_t recv_inline(int peer, uint64_t tag, void* buf, size_t cap) = 0;
};

// Collective over `local_ranks` (world ranks on this node, ascending, `rank` among them).
// Segment names derive from `job_uid` (unique per job); `key_prefix` prefixes store keys.
std::unique_ptr<ShmTransport> make_shm_transport(int rank, const std::vector<int>& local_ranks, Store& store,
                                                 const std::string& key_prefix, const std::string& job_uid,
                                                 std::chrono::milliseconds timeout);

// Copies bytes with non-temporal stores for large sizes (memcpy below the threshold).
void stream_copy(void* dst, const void* src, size_t bytes);

}  // namespace switchyard::comm::detail
