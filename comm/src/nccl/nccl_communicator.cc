// NcclCommunicator over NCCL (nccl_communicator.h): the unique id through the store or the
// host communicator, ncclCommInitRank on the rank's device, one stream per communicator;
// the device-API all_to_all_v (lsa_all_to_all.h) when NcclOptions::device_window_bytes > 0.
#include "switchyard/comm/nccl_communicator.h"

#include <nccl.h>

#include <cstring>
#include <utility>
#include <vector>

#include "lsa_all_to_all.h"
#include "nccl_check.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

namespace switchyard::comm {

namespace {

ncclDataType_t to_nccl(DataType t) {
  switch (t) {
    case DataType::kInt8:
      return ncclInt8;
    case DataType::kUint8:
      return ncclUint8;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kBfloat16:
      return ncclBfloat16;
    case DataType::kFloat8E4M3:
      return ncclFloat8e4m3;
  }
  SY_THROW(InvalidArgument, "nccl: unknown data type " << static_cast<int>(t));
}

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  SY_THROW(InvalidArgument, "nccl: unknown reduce op " << static_cast<int>(op));
}

}  // namespace

// Throws the class matching an NCCL result (see the header), naming the call and the rank.
void nccl_detail::check_nccl(ncclResult_t r, ncclComm_t comm, const char* call, int rank, const char* file, int line) {
  if (r == ncclSuccess) return;
  std::ostringstream m;
  m << "nccl: " << call << " on rank " << rank << " failed: " << ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') m << " (" << last << ")";
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      throw InvalidArgument(m.str(), file, line);
    case ncclRemoteError:
      throw PeerFailure(-1, m.str() + "; a peer failed or the network broke", file, line);
    case ncclSystemError:
      throw IoError(m.str(), file, line);
    default:
      throw InternalError(m.str(), file, line);
  }
}

namespace {

#define SY_NCCL_CHECK(call, comm) SY_NCCL_CHECK_RANK(call, comm, rank_)

class NcclCommunicatorImpl final : public NcclCommunicator {
 public:
  NcclCommunicatorImpl(int rank, int size, int device, const ncclUniqueId& id, const NcclOptions& options)
      : rank_(rank), size_(size), device_(device) {
    cuda::set_device(device_);
    stream_ = std::make_unique<cuda::Stream>();
    SY_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_), nullptr);
    SY_INFO("comm", "nccl: rank " << rank_ << " of " << size_ << " on device " << device_ << " ready");
    if (options.device_window_bytes == 0) {
      device_api_reason_ = "not requested (NcclOptions::device_window_bytes is 0)";
    } else {
      try {
        lsa_ = nccl_detail::LsaAllToAll::create(comm_, rank_, size_, options.device_window_bytes, options.device_ctas,
                                                &device_api_reason_);
      } catch (...) {
        ncclCommDestroy(comm_);
        comm_ = nullptr;
        throw;
      }
      if (!lsa_) SY_INFO("comm", "nccl: rank " << rank_ << ": no device API: " << device_api_reason_);
    }
  }

  ~NcclCommunicatorImpl() override {
    lsa_.reset();  // collective teardown of the window while the communicator lives
    if (comm_ == nullptr) return;
    const ncclResult_t r = ncclCommDestroy(comm_);
    if (r != ncclSuccess) SY_WARN("comm", "nccl: ncclCommDestroy failed: " << ncclGetErrorString(r));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const override { return device_; }
  cuda::StreamHandle stream() const override { return stream_->get(); }

  void all_to_all_v(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                    const size_t* recv_counts, const size_t* recv_displs, DataType type,
                    cuda::StreamHandle stream) override {
    require_open("all_to_all_v");
    require_all_to_all_v("all_to_all_v", send, send_counts, send_displs, recv, recv_counts, recv_displs);
    const size_t eb = dtype_size(type);
    const auto* s = static_cast<const char*>(send);
    auto* r = static_cast<char*>(recv);
    cudaStream_t st = pick(stream);
    SY_NCCL_CHECK(ncclGroupStart(), comm_);
    for (int p = 0; p < size_; ++p) {
      if (send_counts[p] > 0)
        SY_NCCL_CHECK(ncclSend(s + send_displs[p] * eb, send_counts[p], to_nccl(type), p, comm_, st), comm_);
      if (recv_counts[p] > 0)
        SY_NCCL_CHECK(ncclRecv(r + recv_displs[p] * eb, recv_counts[p], to_nccl(type), p, comm_, st), comm_);
    }
    SY_NCCL_CHECK(ncclGroupEnd(), comm_);
  }

  bool has_device_api() const override { return lsa_ != nullptr; }
  std::string device_api_reason() const override { return device_api_reason_; }
  size_t device_slot_bytes() const override { return lsa_ ? lsa_->slot_bytes() : 0; }

  void all_to_all_v_device(const void* send, const size_t* send_counts, const size_t* send_displs, void* recv,
                           const size_t* recv_counts, const size_t* recv_displs, DataType type,
                           cuda::StreamHandle stream) override {
    require_open("all_to_all_v_device");
    if (!lsa_)
      SY_THROW(Unsupported, "nccl all_to_all_v_device on rank " << rank_ << ": no device API: " << device_api_reason_
                                                                << "; hint: use all_to_all_v");
    // recv == nullptr keeps the blocks in the window (device_recv_slot).
    require_all_to_all_v("all_to_all_v_device", send, send_counts, send_displs, recv, recv_counts, recv_displs,
                         /*recv_may_be_null=*/true);
    const size_t eb = dtype_size(type);
    const size_t slot = lsa_->slot_bytes();
    std::vector<nccl_detail::PeerBlock> blocks(size_);
    for (int p = 0; p < size_; ++p) {
      nccl_detail::PeerBlock& b = blocks[p];
      b.send_offset = send_displs[p] * eb;
      b.send_bytes = send_counts[p] * eb;
      b.recv_offset = recv_displs[p] * eb;
      b.recv_bytes = recv_counts[p] * eb;
      SY_REQUIRE(b.send_bytes <= slot && b.recv_bytes <= slot,
                 "nccl all_to_all_v_device on rank " << rank_ << ": the block of peer " << p << " (send " << b.send_bytes
                                                     << " bytes, recv " << b.recv_bytes << " bytes) exceeds the "
                                                     << slot << "-byte slot; hint: raise NcclOptions::device_window_bytes"
                                                     << " (now " << lsa_->window_bytes() << " for " << size_
                                                     << " ranks)");
    }
    lsa_->run(send, recv, blocks.data(), pick(stream));
  }

  const void* device_recv_slot(int peer) const override {
    if (!lsa_)
      SY_THROW(Unsupported, "nccl device_recv_slot on rank " << rank_ << ": no device API: " << device_api_reason_);
    require_peer("device_recv_slot", peer);
    return lsa_->local_slot(peer);
  }

  void all_to_all(const void* send, void* recv, size_t n, DataType type, cuda::StreamHandle stream) override {
    std::vector<size_t> counts(size_, n), displs(size_);
    for (int p = 0; p < size_; ++p) displs[p] = static_cast<size_t>(p) * n;
    all_to_all_v(send, counts.data(), displs.data(), recv, counts.data(), displs.data(), type, stream);
  }

  void all_reduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op,
                  cuda::StreamHandle stream) override {
    require_open("all_reduce");
    require_buffers("all_reduce", send, recv, count);
    SY_NCCL_CHECK(ncclAllReduce(send, recv, count, to_nccl(type), to_nccl(op), comm_, pick(stream)), comm_);
  }

  void all_gather(const void* send, void* recv, size_t n, DataType type, cuda::StreamHandle stream) override {
    require_open("all_gather");
    require_buffers("all_gather", send, recv, n);
    SY_NCCL_CHECK(ncclAllGather(send, recv, n, to_nccl(type), comm_, pick(stream)), comm_);
  }

  void reduce_scatter(const void* send, void* recv, size_t n, DataType type, ReduceOp op,
                      cuda::StreamHandle stream) override {
    require_open("reduce_scatter");
    require_buffers("reduce_scatter", send, recv, n);
    SY_NCCL_CHECK(ncclReduceScatter(send, recv, n, to_nccl(type), to_nccl(op), comm_, pick(stream)), comm_);
  }

  void broadcast(void* buf, size_t count, DataType type, int root, cuda::StreamHandle stream) override {
    require_open("broadcast");
    SY_REQUIRE(root >= 0 && root < size_,
               "nccl broadcast on rank " << rank_ << ": root = " << root << " is out of range [0, " << size_ << ")");
    require_buffers("broadcast", buf, buf, count);
    SY_NCCL_CHECK(ncclBroadcast(buf, buf, count, to_nccl(type), root, comm_, pick(stream)), comm_);
  }

  void send(const void* buf, size_t bytes, int peer, cuda::StreamHandle stream) override {
    require_open("send");
    require_peer("send", peer);
    require_buffers("send", buf, buf, bytes);
    SY_NCCL_CHECK(ncclSend(buf, bytes, ncclUint8, peer, comm_, pick(stream)), comm_);
  }

  void recv(void* buf, size_t bytes, int peer, cuda::StreamHandle stream) override {
    require_open("recv");
    require_peer("recv", peer);
    require_buffers("recv", buf, buf, bytes);
    SY_NCCL_CHECK(ncclRecv(buf, bytes, ncclUint8, peer, comm_, pick(stream)), comm_);
  }

  void barrier() override {
    require_open("barrier");
    if (!barrier_buf_) barrier_buf_ = std::make_unique<cuda::DeviceBuffer>(sizeof(float));
    SY_NCCL_CHECK(ncclAllReduce(barrier_buf_->data(), barrier_buf_->data(), 1, ncclFloat32, ncclSum, comm_, pick(nullptr)),
                  comm_);
    synchronize();
  }

  void synchronize() override {
    require_open("synchronize");
    SY_CUDA_CHECK(cudaStreamSynchronize(stream_->get()), "nccl synchronize on rank " << rank_);
    ncclResult_t async = ncclSuccess;
    SY_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async), comm_);
    SY_NCCL_CHECK(async, comm_);
  }

  void abort() override {
    if (comm_ == nullptr) return;
    // The window's registration goes with the communicator; its memory is freed by the
    // destructor (a device-API kernel may still be waiting in an LSA barrier for a peer).
    if (lsa_) lsa_->forget_comm();
    const ncclResult_t r = ncclCommAbort(comm_);
    if (r != ncclSuccess) SY_WARN("comm", "nccl: ncclCommAbort failed: " << ncclGetErrorString(r));
    comm_ = nullptr;
  }

 private:
  cudaStream_t pick(cuda::StreamHandle s) const { return s != nullptr ? s : stream_->get(); }

  void require_open(const char* what) const {
    if (comm_ == nullptr) SY_THROW(InvalidArgument, "nccl " << what << " on rank " << rank_ << ": communicator was aborted");
  }
  void require_all_to_all_v(const char* what, const void* send, const size_t* send_counts, const size_t* send_displs,
                            const void* recv, const size_t* recv_counts, const size_t* recv_displs,
                            bool recv_may_be_null = false) const {
    SY_REQUIRE(send_counts && send_displs && recv_counts && recv_displs,
               "nccl " << what << " on rank " << rank_ << ": count and displacement arrays must not be null");
    for (int p = 0; p < size_; ++p) {
      SY_REQUIRE(send_counts[p] == 0 || send != nullptr,
                 "nccl " << what << " on rank " << rank_ << ": send is null but send_counts[" << p
                         << "] = " << send_counts[p]);
      SY_REQUIRE(recv_counts[p] == 0 || recv != nullptr || recv_may_be_null,
                 "nccl " << what << " on rank " << rank_ << ": recv is null but recv_counts[" << p
                         << "] = " << recv_counts[p]);
    }
  }
  void require_peer(const char* what, int peer) const {
    SY_REQUIRE(peer >= 0 && peer < size_,
               "nccl " << what << " on rank " << rank_ << ": peer = " << peer << " is out of range [0, " << size_ << ")");
  }
  void require_buffers(const char* what, const void* send, const void* recv, size_t count) const {
    SY_REQUIRE(count == 0 || (send != nullptr && recv != nullptr),
               "nccl " << what << " on rank " << rank_ << ": null buffer with count " << count);
  }

  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<cuda::DeviceBuffer> barrier_buf_;
  std::unique_ptr<nccl_detail::LsaAllToAll> lsa_;  // device API; null when unavailable
  std::string device_api_reason_;                 // why lsa_ is null
};

int pick_device(int requested, int local_rank) {
  const int n = cuda::device_count();
  if (n == 0) SY_THROW(Unsupported, "nccl: no GPU is usable on this machine (cudaGetDeviceCount gave 0)");
  if (requested >= 0) return requested;
  return local_rank % n;
}

}  // namespace

bool NcclCommunicator::available() { return true; }

int NcclCommunicator::runtime_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return 0;
  return v;
}

int NcclCommunicator::build_version() { return NCCL_VERSION_CODE; }

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Store& store, int rank, int size, const NcclOptions& options) {
  SY_REQUIRE(size >= 1 && rank >= 0 && rank < size, "nccl create: rank = " << rank << ", size = " << size << " is invalid");
  const int device = pick_device(options.device, rank);
  ncclUniqueId id{};
  const std::string key = options.key_prefix + "/nccl_unique_id";
  if (rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
      SY_THROW(InternalError, "nccl create: ncclGetUniqueId failed: " << ncclGetErrorString(r));
    store.set(key, std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id), reinterpret_cast<uint8_t*>(&id) + sizeof(id)));
  } else {
    const std::vector<uint8_t> v =
        store_get_all(store, {key}, {"rank 0"}, options.timeout, "nccl create on rank " + std::to_string(rank))[0];
    if (v.size() != sizeof(id))
      SY_THROW(InternalError, "nccl create: the unique id in the store has " << v.size() << " bytes, not " << sizeof(id));
    std::memcpy(&id, v.data(), sizeof(id));
  }
  return std::make_unique<NcclCommunicatorImpl>(rank, size, device, id, options);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& host, const NcclOptions& options) {
  const int rank = host.rank();
  // Every rank must take part in the broadcast before any can fail on its device choice.
  ncclUniqueId id{};
  ncclResult_t r = ncclSuccess;
  if (rank == 0) r = ncclGetUniqueId(&id);
  int ok = r == ncclSuccess ? 1 : 0;
  host.broadcast(&ok, 1, DataType::kInt32, 0);
  if (!ok) SY_THROW(InternalError, "nccl create: ncclGetUniqueId failed on rank 0");
  host.broadcast(&id, sizeof(id), DataType::kUint8, 0);
  const int device = pick_device(options.device, host.rank_map().local_rank(rank));
  return std::make_unique<NcclCommunicatorImpl>(rank, host.size(), device, id, options);
}

}  // namespace switchyard::comm
