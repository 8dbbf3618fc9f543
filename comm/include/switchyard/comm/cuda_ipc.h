// IpcPeerMemory: direct pointers into the device buffers of the other ranks on this node,
// through CUDA IPC (cudaIpcGetMemHandle / cudaIpcOpenMemHandle).
//
// Each rank exports one device buffer (a cuda::DeviceBuffer, i.e. a cudaMalloc base
// pointer); the 64-byte handles travel through comm's Store or a host Communicator's
// all_gather, and each rank opens the handles of the ranks on its node. peer(r) is then a
// device pointer this process's kernels may load from and store to. Its own rank maps to the
// local buffer (a process cannot open its own handle). Works for several processes on one
// GPU as well as for peers on other GPUs of the node (which need peer access).
//
// Ordering across processes is the caller's: finish the writing kernels (stream
// synchronize) and pass a host barrier before a peer reads.
//
// Ownership: the exported buffer stays owned by the caller and must outlive this object and
// the peers' mappings of it (keep it until a barrier after every peer destroyed its
// IpcPeerMemory). The destructor closes the opened handles. Creation is collective and
// blocking. Errors: InvalidArgument for an empty buffer, Timeout (store) naming the ranks
// whose handle never came, Unsupported in a build without CUDA.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/comm/store.h"
#include "switchyard/common/cuda.h"

namespace switchyard::comm {

class IpcPeerMemory {
 public:
  // Over a store: `node_ranks` are the ranks of this node (this rank included), keys are
  // "<key_prefix>/ipc/<rank>" (unique per exchange).
  static std::unique_ptr<IpcPeerMemory> exchange(Store& store, const std::string& key_prefix, int rank,
                                                 const std::vector<int>& node_ranks, const cuda::DeviceBuffer& local,
                                                 std::chrono::milliseconds timeout);
  // Over a host communicator (all_gather of the handles); the ranks of this node come from
  // host.rank_map(). Collective over host.
  static std::unique_ptr<IpcPeerMemory> exchange(Communicator& host, const cuda::DeviceBuffer& local);

  ~IpcPeerMemory();
  IpcPeerMemory(const IpcPeerMemory&) = delete;
  IpcPeerMemory& operator=(const IpcPeerMemory&) = delete;

  // Device pointer to the buffer of `rank` (a rank of this node); throws InvalidArgument
  // for a rank on another node.
  void* peer(int rank) const;
  size_t peer_bytes(int rank) const;
  // peer() for every rank of the communicator, nullptr for ranks on other nodes.
  const std::vector<void*>& pointers() const { return ptrs_; }

 private:
  IpcPeerMemory() = default;
  void open(int rank, const std::vector<std::vector<uint8_t>>& handles, const cuda::DeviceBuffer& local);

  int rank_ = 0;
  std::vector<void*> ptrs_;      // [size]
  std::vector<size_t> bytes_;    // [size]
  std::vector<bool> opened_;     // [size] handles to close
};

}  // namespace switchyard::comm
