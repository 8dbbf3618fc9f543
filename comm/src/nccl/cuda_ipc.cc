// IpcPeerMemory (cuda_ipc.h): CUDA IPC handles of one device buffer per rank, exchanged
// through the store or a host all_gather, opened for the ranks of this node.
#include "switchyard/comm/cuda_ipc.h"

#include <algorithm>
#include <cstring>

#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard::comm {

namespace {

// Wire form of one rank's export: the handle, then the buffer size (8 bytes).
constexpr size_t kRecordBytes = sizeof(cudaIpcMemHandle_t) + sizeof(uint64_t);

std::vector<uint8_t> export_record(const cuda::DeviceBuffer& local, int rank) {
  SY_REQUIRE(local.data() != nullptr && local.bytes() > 0,
             "IpcPeerMemory on rank " << rank << ": the exported device buffer is empty");
  cudaIpcMemHandle_t h{};
  SY_CUDA_CHECK(cudaIpcGetMemHandle(&h, local.data()), "IpcPeerMemory: export a buffer of " << local.bytes()
                                                                                            << " bytes on rank " << rank);
  std::vector<uint8_t> rec(kRecordBytes);
  const uint64_t bytes = local.bytes();
  std::memcpy(rec.data(), &h, sizeof(h));
  std::memcpy(rec.data() + sizeof(h), &bytes, sizeof(bytes));
  return rec;
}

}  // namespace

void IpcPeerMemory::open(int rank, const std::vector<std::vector<uint8_t>>& records, const cuda::DeviceBuffer& local) {
  rank_ = rank;
  const size_t n = records.size();
  ptrs_.assign(n, nullptr);
  bytes_.assign(n, 0);
  opened_.assign(n, false);
  for (size_t r = 0; r < n; ++r) {
    if (records[r].empty()) continue;  // not on this node
    if (static_cast<int>(r) == rank) {
      ptrs_[r] = local.data();
      bytes_[r] = local.bytes();
      continue;
    }
    if (records[r].size() != kRecordBytes)
      SY_THROW(InternalError, "IpcPeerMemory on rank " << rank << ": the record of rank " << r << " has "
                                                       << records[r].size() << " bytes, not " << kRecordBytes);
    cudaIpcMemHandle_t h{};
    uint64_t bytes = 0;
    std::memcpy(&h, records[r].data(), sizeof(h));
    std::memcpy(&bytes, records[r].data() + sizeof(h), sizeof(bytes));
    SY_CUDA_CHECK(cudaIpcOpenMemHandle(&ptrs_[r], h, cudaIpcMemLazyEnablePeerAccess),
                  "IpcPeerMemory on rank " << rank << ": open the buffer of rank " << r);
    bytes_[r] = bytes;
    opened_[r] = true;
  }
}

std::unique_ptr<IpcPeerMemory> IpcPeerMemory::exchange(Store& store, const std::string& key_prefix, int rank,
                                                       const std::vector<int>& node_ranks,
                                                       const cuda::DeviceBuffer& local,
                                                       std::chrono::milliseconds timeout) {
  SY_REQUIRE(std::find(node_ranks.begin(), node_ranks.end(), rank) != node_ranks.end(),
             "IpcPeerMemory: rank " << rank << " is not among the node's ranks");
  store.set(key_prefix + "/ipc/" + std::to_string(rank), export_record(local, rank));
  std::vector<std::string> keys, what;
  for (int r : node_ranks) {
    keys.push_back(key_prefix + "/ipc/" + std::to_string(r));
    what.push_back("rank " + std::to_string(r));
  }
  auto values = store_get_all(store, keys, what, timeout, "IpcPeerMemory on rank " + std::to_string(rank));
  const int max_rank = *std::max_element(node_ranks.begin(), node_ranks.end());
  std::vector<std::vector<uint8_t>> records(max_rank + 1);
  for (size_t i = 0; i < node_ranks.size(); ++i) records[node_ranks[i]] = std::move(values[i]);
  std::unique_ptr<IpcPeerMemory> m(new IpcPeerMemory());
  m->open(rank, records, local);
  return m;
}

std::unique_ptr<IpcPeerMemory> IpcPeerMemory::exchange(Communicator& host, const cuda::DeviceBuffer& local) {
  const int R = host.size(), me = host.rank();
  // An empty buffer still takes part in the all_gather so no peer waits; it then throws.
  std::vector<uint8_t> mine(kRecordBytes, 0);
  std::string failure;
  try {
    mine = export_record(local, me);
  } catch (const Error& e) {
    failure = e.what();
  }
  std::vector<uint8_t> all(kRecordBytes * R);
  host.all_gather(mine.data(), all.data(), kRecordBytes, DataType::kUint8);
  if (!failure.empty()) SY_THROW(InvalidArgument, failure);
  std::vector<std::vector<uint8_t>> records(R);
  for (int r = 0; r < R; ++r) {
    if (!host.rank_map().same_node(me, r)) continue;
    records[r].assign(all.begin() + static_cast<long>(r * kRecordBytes),
                      all.begin() + static_cast<long>((r + 1) * kRecordBytes));
    if (std::all_of(records[r].begin(), records[r].end(), [](uint8_t b) { return b == 0; }))
      throw PeerFailure(r, "IpcPeerMemory on rank " + std::to_string(me) + ": rank " + std::to_string(r) +
                               " could not export its buffer", __FILE__, __LINE__);
  }
  std::unique_ptr<IpcPeerMemory> m(new IpcPeerMemory());
  m->open(me, records, local);
  return m;
}

IpcPeerMemory::~IpcPeerMemory() {
  for (size_t r = 0; r < ptrs_.size(); ++r) {
    if (!opened_[r]) continue;
    const cudaError_t e = cudaIpcCloseMemHandle(ptrs_[r]);
    if (e != cudaSuccess) SY_WARN("comm", "IpcPeerMemory: closing the mapping of rank " << r << " failed: " << cudaGetErrorString(e));
  }
}

void* IpcPeerMemory::peer(int rank) const {
  SY_REQUIRE(rank >= 0 && rank < static_cast<int>(ptrs_.size()) && ptrs_[rank] != nullptr,
             "IpcPeerMemory on rank " << rank_ << ": rank " << rank << " is not on this node");
  return ptrs_[rank];
}

size_t IpcPeerMemory::peer_bytes(int rank) const {
  peer(rank);
  return bytes_[rank];
}

}  // namespace switchyard::comm
