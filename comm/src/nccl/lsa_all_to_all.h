// Internal to comm/src/nccl: all_to_all_v through NCCL's device API (NCCL >= 2.28), for
// NcclCommunicator::all_to_all_v_device.
//
// Each rank owns a symmetric window (ncclMemAlloc + ncclCommWindowRegister with
// NCCL_WIN_COLL_SYMMETRIC) of `window_bytes`, split into one slot per source rank:
// slot s (bytes [s * slot_bytes, (s + 1) * slot_bytes)) receives rank s's block. One kernel
// of `ctas` CTAs runs the exchange; CTA b of every rank moves the b-th 128-byte-aligned
// share of every block, so it only needs its own LSA barrier (index b) with CTA b of the
// peers, never a grid-wide one:
//   1. barrier: every peer has finished reading its slots in the previous call;
//   2. push: copy this rank's block for peer q into q's window, slot `rank`, with plain
//      stores through ncclGetLsaPointer (NVLink or PCIe P2P load/store);
//   3. barrier (release/acquire at system scope): the peers' blocks have arrived;
//   4. copy out: slot p of this rank's window to recv + recv offset of p (skipped when recv
//      is null: the caller reads the slots in place, local_slot()).
// Needs every rank in one LSA team (one node, P2P-capable GPUs) and the same NCCL (>= 2.28)
// at build and run time; create() says why not otherwise.
//
// Threading and ordering: one call at a time per communicator; successive calls must be
// ordered on the device (the same stream, or events), since they reuse the window. Every
// rank must make every call (the kernel waits in its barriers for all ranks), also with
// zero counts.
#pragma once

#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct CUstream_st;

namespace switchyard::comm::nccl_detail {

// One peer's part of an all_to_all_v, in bytes from the send and recv base pointers.
struct PeerBlock {
  uint64_t send_offset, send_bytes;  // what this rank sends to the peer
  uint64_t recv_offset, recv_bytes;  // what this rank receives from the peer
};

class LsaAllToAll {
 public:
  // Most ranks of one LSA team the kernel takes (its per-peer table is a kernel argument);
  // 72 is the largest NVLink domain (NVL72).
  static constexpr int kMaxRanks = 72;

  // Collective over `comm` (rank `rank` of `size`): on success every rank has its window
  // and device communicator. Returns nullptr and sets *why when the device API cannot be
  // used here: NCCL headers older than 2.28, a library at run time other than the headers'
  // release (the device structures' layouts change between releases), more than kMaxRanks
  // ranks, ranks outside this rank's LSA team, or no symmetric memory support in NCCL
  // (cuMem off, NCCL_WIN_ENABLE=0, no direct P2P). Throws (nccl_check.h classes) when an NCCL set-up call
  // fails, InvalidArgument for window_bytes == 0 or ctas outside [1, 1024].
  static std::unique_ptr<LsaAllToAll> create(ncclComm_t comm, int rank, int size, size_t window_bytes, int ctas,
                                             std::string* why);

  // Waits for the device, then frees the device communicator, the window and its memory
  // (collective, like create) unless forget_comm() was called. Never throws.
  virtual ~LsaAllToAll() = default;

  // Bytes of one slot: the most a rank can send to, or receive from, one peer per call.
  virtual size_t slot_bytes() const = 0;
  virtual size_t window_bytes() const = 0;
  virtual int ctas() const = 0;

  // Enqueues the exchange on `stream`. `blocks` has `size` entries whose byte counts the
  // caller checked against slot_bytes(); send is a device pointer (null only where the
  // send byte counts are all zero); recv is a device pointer, or null to leave the blocks in
  // the slots (step 4 skipped).
  virtual void run(const void* send, void* recv, const PeerBlock* blocks, CUstream_st* stream) = 0;

  // This rank's slot for blocks from `peer` (device memory, slot_bytes() long): after run()
  // it holds the peer's block until the next run() on this communicator.
  virtual const void* local_slot(int peer) const = 0;

  // The NCCL communicator was aborted: the destructor then frees only the memory.
  virtual void forget_comm() = 0;
};

}  // namespace switchyard::comm::nccl_detail
