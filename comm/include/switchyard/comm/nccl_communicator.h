// NcclCommunicator: the CUDA backend of comm. The Communicator operations (all_to_all_v,
// all_reduce, all_gather, reduce_scatter, broadcast, barrier) on device buffers, run by NCCL.
//
// Bootstrap: rank 0 creates the ncclUniqueId and publishes it through comm's Store (the TCP
// store of the job, or a memory store for one process), or through a host Communicator's
// broadcast; every rank then calls ncclCommInitRank on its device.
//
// Semantics differ from the CPU Communicator in one way, as in NCCL: operations are
// STREAM-ORDERED. Each call enqueues its work on `stream` (nullptr = this communicator's own
// stream) and returns at once; the data is ready when that stream reaches the point after
// the call (synchronize(), an event, or later work on the stream). Counts are in elements of
// `type`, displacements in elements, as in communicator.h. Buffers are device pointers of
// this communicator's device.
// all_to_all_v is one ncclGroupStart/End around an ncclSend and an ncclRecv per peer with a
// non-zero count (the EP pattern); empty peers are skipped.
//
// all_to_all_v_device is the same exchange through NCCL's device API (NCCL >= 2.28), set up
// at creation when NcclOptions::device_window_bytes > 0: a symmetric window per rank
// (ncclMemAlloc + ncclCommWindowRegister, NCCL_WIN_COLL_SYMMETRIC) split into one slot per
// source rank, a device communicator with one LSA barrier per CTA, and one kernel whose CTAs
// store this rank's blocks straight into the peers' windows (ncclGetLsaPointer, load/store
// over NVLink), meet in an LSA barrier and copy the arrived blocks out. It needs every rank
// in one LSA team (one node, P2P-capable GPUs), NCCL's symmetric memory (cuMem), and the
// same NCCL release at build and run time (the device structures' layouts change between
// releases, even 2.28.3 to 2.28.9); otherwise creation still succeeds, has_device_api() is
// false and all_to_all_v_device throws Unsupported saying why (use all_to_all_v). With the
// device API set up, destruction is collective (window deregistration) and waits for the
// device; a rank that skips a device call leaves its peers' kernels waiting (no timeout).
//
// Limits: NCCL refuses two ranks on one GPU, so on a one-GPU machine this is usable (and
// tested) at world size 1 only; several processes on one GPU share memory through
// cuda_ipc.h instead.
//
// Threading: one thread at a time per communicator, the same order of calls on every rank.
// Errors: InvalidArgument for bad arguments (checked before NCCL sees them), Unsupported
// without a GPU or when NCCL was not found at build time, PeerFailure for ncclRemoteError,
// IoError for ncclSystemError, InternalError otherwise; messages name the call, the rank and
// NCCL's last error text.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/store.h"
#include "switchyard/comm/types.h"
#include "switchyard/common/cuda.h"

namespace switchyard::comm {

struct NcclOptions {
  // Device of this rank; -1 = local rank modulo the number of GPUs (the host Communicator's
  // rank map says the local rank; with a bare Store, the global rank is used).
  int device = -1;
  // Prefix of the store keys of this communicator; unique per NCCL communicator of the job.
  std::string key_prefix = "nccl";
  std::chrono::milliseconds timeout{60000};  // waiting for rank 0's unique id
  // Device API (all_to_all_v_device): bytes of each rank's symmetric window, 0 = not set up.
  // It is split into `size` slots, so one call moves at most about
  // device_window_bytes / size bytes from each peer to each peer. Same value on every rank.
  size_t device_window_bytes = 0;
  // CTAs of the device all_to_all_v kernel, each with its own LSA barrier; same on every rank.
  int device_ctas = 16;
};

class NcclCommunicator {
 public:
  // True when this build has NCCL (found beside the CUDA toolkit at configure time).
  static bool available();
  // NCCL's version code at run time (e.g. 22809 for 2.28.9); 0 when unavailable.
  static int runtime_version();
  // NCCL's version code of the headers this build compiled against; 0 when unavailable. The
  // device API needs runtime_version() == build_version().
  static int build_version();

  // Collective over the `size` ranks that use `store`. Blocking.
  static std::unique_ptr<NcclCommunicator> create(Store& store, int rank, int size, const NcclOptions& options = {});
  // Collective over `host` (the id travels by host.broadcast); ranks and size are host's.
  static std::unique_ptr<NcclCommunicator> create(Communicator& host, const NcclOptions& options = {});

  virtual ~NcclCommunicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int device() const = 0;
  // This communicator's own stream (used when a call passes nullptr).
  virtual cuda::StreamHandle stream() const = 0;

  // Device buffers; see the file comment for stream ordering.
  virtual void all_to_all_v(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                            const size_t* recv_counts, const size_t* recv_displs, DataType type,
                            cuda::StreamHandle stream = nullptr) = 0;
  virtual void all_to_all(const void* send, void* recv, size_t count_per_peer, DataType type,
                          cuda::StreamHandle stream = nullptr) = 0;
  virtual void all_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op,
                          cuda::StreamHandle stream = nullptr) = 0;
  virtual void all_gather(const void* send, void* recv, size_t count_per_rank, DataType type,
                          cuda::StreamHandle stream = nullptr) = 0;
  virtual void reduce_scatter(const void* send, void* recv, size_t count_per_rank, DataType type, ReduceOp op,
                              cuda::StreamHandle stream = nullptr) = 0;
  virtual void broadcast(void* buf, size_t count, DataType type, int root, cuda::StreamHandle stream = nullptr) = 0;
  // Point to point (bytes), stream-ordered; a matching recv must be posted by the peer.
  virtual void send(const void* buf, size_t bytes, int peer, cuda::StreamHandle stream = nullptr) = 0;
  virtual void recv(void* buf, size_t bytes, int peer, cuda::StreamHandle stream = nullptr) = 0;
  // Device API (see the file comment). True when all_to_all_v_device can run; otherwise
  // device_api_reason() says why (not requested, NCCL release, LSA team, symmetric memory).
  virtual bool has_device_api() const = 0;
  virtual std::string device_api_reason() const = 0;
  // The most bytes one peer's block may have in all_to_all_v_device (0 without the device API).
  virtual size_t device_slot_bytes() const = 0;
  // all_to_all_v (same arguments and stream ordering) by one device-API kernel. Collective:
  // every rank must make every call, also with all counts zero (the kernel waits for all).
  // Calls must be ordered on the device (same stream, or events): they reuse the window.
  // recv may be nullptr: the blocks then stay in the window (read them in place through
  // device_recv_slot), saving the copy out; recv_counts still give each block's size.
  // Throws Unsupported without the device API, InvalidArgument when a block exceeds
  // device_slot_bytes().
  virtual void all_to_all_v_device(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                                   const size_t* recv_counts, const size_t* recv_displs, DataType type,
                                   cuda::StreamHandle stream = nullptr) = 0;
  // Device pointer to the block that `peer` sent in the last all_to_all_v_device
  // (recv_counts[peer] elements, from the slot's start). Valid, stream-ordered, until the next
  // all_to_all_v_device: read it on the call's stream (or after an event), before the next
  // call. Throws Unsupported without the device API, InvalidArgument for a bad peer.
  virtual const void* device_recv_slot(int peer) const = 0;
  // A one-element all_reduce, then synchronize(): every rank has reached this point.
  virtual void barrier() = 0;

  // Waits for this communicator's stream and checks NCCL's asynchronous error state.
  virtual void synchronize() = 0;
  // Aborts the NCCL communicator (ncclCommAbort): pending operations fail. Never blocks
  // on peers.
  virtual void abort() = 0;
};

}  // namespace switchyard::comm
