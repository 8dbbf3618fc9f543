// LsaAllToAll (lsa_all_to_all.h): the symmetric window, the device communicator with one LSA
// barrier per CTA, and the all_to_all_v kernel over NCCL's device API. Compiled only where
// the NCCL headers are 2.28 or newer; with older headers create() says so and returns null.
#include "lsa_all_to_all.h"

#include <nccl.h>

#include <sstream>

#include "nccl_check.h"
#include "switchyard/common/cuda_check.h"
#include "switchyard/common/error.h"
#include "switchyard/common/log.h"

#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0) && __has_include(<nccl_device.h>)
#define SY_NCCL_DEVICE_API 1
// NCCL 2.28's GIN headers have unused parameters; keep -Wall -Wextra quiet about them only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <nccl_device.h>
#pragma GCC diagnostic pop
#else
#define SY_NCCL_DEVICE_API 0
#endif

namespace switchyard::comm::nccl_detail {

namespace {

std::string version_text(int code) {
  // Codes from 2.9 on are major * 10000 + minor * 100 + patch.
  std::ostringstream s;
  s << code / 10000 << "." << (code / 100) % 100 << "." << code % 100;
  return s.str();
}

}  // namespace

#if SY_NCCL_DEVICE_API

namespace {

constexpr int kMinRuntimeVersion = 22800;  // NCCL 2.28.0: the first with the device API
constexpr int kThreads = 512;           // per CTA
constexpr uint64_t kShareAlign = 128;   // a CTA's share of a block starts on a cache line
constexpr size_t kWindowAlign = NCCL_WIN_REQUIRED_ALIGNMENT;
constexpr size_t kSlotAlign = 256;

// The kernel's arguments (by value: about 2.3 KiB, under the 4 KiB parameter limit).
struct KernelArgs {
  const char* send;
  char* recv;
  uint64_t slot_bytes;
  int size;
  PeerBlock blocks[LsaAllToAll::kMaxRanks];
};
static_assert(sizeof(KernelArgs) + sizeof(ncclDevComm) + sizeof(ncclWindow_t) < 4000,
              "kernel arguments must stay under the 4 KiB parameter limit");

// [lo, hi): the share of a `len`-byte block that CTA blockIdx.x moves. It depends on len and
// the grid only, so the sender's CTA b and the receiver's CTA b agree on it.
__device__ inline void cta_share(uint64_t len, uint64_t& lo, uint64_t& hi) {
  const uint64_t per = (len + gridDim.x - 1) / gridDim.x;
  const uint64_t chunk = (per + kShareAlign - 1) / kShareAlign * kShareAlign;
  lo = min(len, static_cast<uint64_t>(blockIdx.x) * chunk);
  hi = min(len, lo + chunk);
}

// Copies n bytes (a multiple of sizeof(T); both pointers aligned to it) with the CTA. Each
// thread issues kUnroll loads before its stores, so a CTA keeps 512 x 8 x 16 bytes in
// flight (a dependent load/store pair per step leaves a CTA latency-bound). kL2Only reads
// through L2 (ld.global.cg): the window is written by peers during the kernel.
template <class T, bool kL2Only>
__device__ inline void cta_copy_as(char* __restrict__ dst, const char* __restrict__ src, uint64_t n) {
  constexpr int kUnroll = 8;
  T* __restrict__ d = reinterpret_cast<T*>(dst);
  const T* __restrict__ s = reinterpret_cast<const T*>(src);
  const uint64_t count = n / sizeof(T);
  const uint64_t stride = blockDim.x;
  uint64_t i = threadIdx.x;
  for (; i + (kUnroll - 1) * stride < count; i += kUnroll * stride) {
    T v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = kL2Only ? __ldcg(s + i + u * stride) : s[i + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) d[i + u * stride] = v[u];
  }
  for (; i < count; i += stride) d[i] = kL2Only ? __ldcg(s + i) : s[i];
}

// The widest element that the pointers and the length allow.
template <bool kL2Only>
__device__ inline void cta_copy(char* dst, const char* src, uint64_t n) {
  const uint64_t a = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | n;
  if ((a & 15) == 0) {
    cta_copy_as<uint4, kL2Only>(dst, src, n);
  } else if ((a & 7) == 0) {
    cta_copy_as<uint2, kL2Only>(dst, src, n);
  } else if ((a & 3) == 0) {
    cta_copy_as<unsigned int, kL2Only>(dst, src, n);
  } else {
    cta_copy_as<unsigned char, kL2Only>(dst, src, n);
  }
}

__global__ void __launch_bounds__(kThreads) lsa_all_to_all_kernel(ncclDevComm comm, ncclWindow_t window,
                                                                  KernelArgs args) {
  __shared__ PeerBlock blocks[LsaAllToAll::kMaxRanks];
  for (int p = threadIdx.x; p < args.size; p += blockDim.x) blocks[p] = args.blocks[p];

  ncclCoopCta cta;
  ncclLsaBarrierSession<ncclCoopCta> barrier(cta, comm, ncclTeamTagLsa{}, blockIdx.x);
  // 1. Every peer's CTA b has finished reading its slots in the previous call (and the
  // shared table is complete: the barrier syncs the CTA).
  barrier.sync(cta, ::cuda::memory_order_acq_rel);

  // 2. Push this rank's blocks into the peers' windows, slot `rank`; start at the next rank
  // so that the ranks do not all write to the same peer at once.
  const uint64_t slot = args.slot_bytes;
  for (int i = 0; i < args.size; ++i) {
    const int peer = (comm.rank + 1 + i) % args.size;
    uint64_t lo, hi;
    cta_share(blocks[peer].send_bytes, lo, hi);
    if (hi <= lo) continue;
    const int lsa_peer = comm.lsaRank + (peer - comm.rank);
    char* dst = static_cast<char*>(ncclGetLsaPointer(window, comm.rank * slot + lo, lsa_peer));
    cta_copy<false>(dst, args.send + blocks[peer].send_offset + lo, hi - lo);
  }

  // 3. Release this CTA's stores, acquire the peers' CTA b stores into this window.
  barrier.sync(cta, ::cuda::memory_order_acq_rel);

  // 4. Copy each peer's slot out to the receive buffer (none: the caller reads in place).
  for (int peer = 0; args.recv != nullptr && peer < args.size; ++peer) {
    uint64_t lo, hi;
    cta_share(blocks[peer].recv_bytes, lo, hi);
    if (hi <= lo) continue;
    const char* src = static_cast<const char*>(ncclGetLocalPointer(window, peer * slot + lo));
    cta_copy<true>(args.recv + blocks[peer].recv_offset + lo, src, hi - lo);
  }
}

class LsaAllToAllImpl final : public LsaAllToAll {
 public:
  LsaAllToAllImpl(ncclComm_t comm, int rank, int size, size_t window_bytes, int ctas)
      : comm_(comm), rank_(rank), size_(size), ctas_(ctas) {
    window_bytes_ = (window_bytes + kWindowAlign - 1) / kWindowAlign * kWindowAlign;
    slot_bytes_ = window_bytes_ / static_cast<size_t>(size_) / kSlotAlign * kSlotAlign;
    try {
      SY_NCCL_CHECK_RANK(ncclMemAlloc(&buffer_, window_bytes_), comm_, rank_);
      SY_NCCL_CHECK_RANK(ncclCommWindowRegister(comm_, buffer_, window_bytes_, &window_, NCCL_WIN_COLL_SYMMETRIC),
                         comm_, rank_);
      ncclDevCommRequirements reqs{};
#ifdef NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER
      reqs = NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER;
#endif
      reqs.lsaBarrierCount = ctas_;  // one barrier per CTA (index blockIdx.x)
      SY_NCCL_CHECK_RANK(ncclDevCommCreate(comm_, &reqs, &dev_), comm_, rank_);
      dev_created_ = true;
    } catch (...) {
      release();
      throw;
    }
    if (dev_.lsaSize != size_ || dev_.nRanks != size_ || dev_.rank != rank_)
      SY_THROW(InternalError, "nccl device api on rank " << rank_ << ": the device communicator has rank " << dev_.rank
                                                         << " of " << dev_.nRanks << ", LSA team of " << dev_.lsaSize
                                                         << ", expected rank " << rank_ << " of " << size_);
    SY_INFO("comm", "nccl device api: rank " << rank_ << " of " << size_ << ", window " << window_bytes_ << " bytes ("
                                             << slot_bytes_ << " per peer), " << ctas_ << " CTAs");
  }

  ~LsaAllToAllImpl() override { release(); }

  size_t slot_bytes() const override { return slot_bytes_; }
  size_t window_bytes() const override { return window_bytes_; }
  int ctas() const override { return ctas_; }

  void run(const void* send, void* recv, const PeerBlock* blocks, CUstream_st* stream) override {
    KernelArgs args{};
    args.send = static_cast<const char*>(send);
    args.recv = static_cast<char*>(recv);
    args.slot_bytes = slot_bytes_;
    args.size = size_;
    for (int p = 0; p < size_; ++p) args.blocks[p] = blocks[p];
    lsa_all_to_all_kernel<<<ctas_, kThreads, 0, stream>>>(dev_, window_, args);
    SY_CUDA_CHECK_LAUNCH("nccl all_to_all_v_device on rank " << rank_ << " (" << ctas_ << " CTAs)");
  }

  const void* local_slot(int peer) const override {
    return static_cast<const char*>(buffer_) + static_cast<size_t>(peer) * slot_bytes_;
  }

  void forget_comm() override { comm_ = nullptr; }

 private:
  // Frees what exists, in reverse order; never throws.
  void release() {
    if (comm_ != nullptr && (dev_created_ || window_ != nullptr)) {
      // No kernel may use the device communicator or the window while they go.
      if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess)
        SY_WARN("comm", "nccl device api: cudaDeviceSynchronize before teardown: " << cudaGetErrorString(e));
      if (dev_created_) {
        if (ncclResult_t r = ncclDevCommDestroy(comm_, &dev_); r != ncclSuccess)
          SY_WARN("comm", "nccl device api: ncclDevCommDestroy failed: " << ncclGetErrorString(r));
      }
      if (window_ != nullptr) {
        if (ncclResult_t r = ncclCommWindowDeregister(comm_, window_); r != ncclSuccess)
          SY_WARN("comm", "nccl device api: ncclCommWindowDeregister failed: " << ncclGetErrorString(r));
      }
    }
    dev_created_ = false;
    window_ = nullptr;
    if (buffer_ != nullptr) {
      if (ncclResult_t r = ncclMemFree(buffer_); r != ncclSuccess)
        SY_WARN("comm", "nccl device api: ncclMemFree failed: " << ncclGetErrorString(r));
      buffer_ = nullptr;
    }
  }

  ncclComm_t comm_;
  int rank_, size_, ctas_;
  size_t window_bytes_ = 0, slot_bytes_ = 0;
  void* buffer_ = nullptr;
  ncclWindow_t window_ = nullptr;
  ncclDevComm dev_{};
  bool dev_created_ = false;
};

}  // namespace

std::unique_ptr<LsaAllToAll> LsaAllToAll::create(ncclComm_t comm, int rank, int size, size_t window_bytes, int ctas,
                                                 std::string* why) {
  SY_REQUIRE(window_bytes > 0, "nccl device api on rank " << rank << ": window_bytes must be > 0");
  SY_REQUIRE(ctas >= 1 && ctas <= 1024,
             "nccl device api on rank " << rank << ": device_ctas = " << ctas << " is outside [1, 1024]");
  int runtime = 0;
  if (ncclGetVersion(&runtime) != ncclSuccess || runtime < kMinRuntimeVersion) {
    *why = "the NCCL library loaded at run time is " + version_text(runtime) +
           "; the device API needs 2.28 or newer (this build's headers are " + version_text(NCCL_VERSION_CODE) + ")";
    return nullptr;
  }
  if (runtime != NCCL_VERSION_CODE) {
    // The kernel inlines the headers' ncclDevComm and ncclWindow_vidmem, and ncclDevCommCreate
    // reads the headers' ncclDevCommRequirements; their layouts changed between 2.28 patch
    // releases (2.28.3 to 2.28.9: GIN fields), so only the headers' own release is safe.
    *why = "the NCCL library loaded at run time is " + version_text(runtime) + " but this build's headers are " +
           version_text(NCCL_VERSION_CODE) +
           "; the device API's structures differ between releases, so it is used only with the same NCCL at build "
           "and run time";
    return nullptr;
  }
  if (size > kMaxRanks) {
    *why = "world size " + std::to_string(size) + " is above " + std::to_string(kMaxRanks) +
           ", the most ranks the device all_to_all_v kernel takes";
    return nullptr;
  }
  // Collective (NCCL sets up its device runtime state on the first call).
  const ncclTeam_t lsa = ncclTeamLsa(comm);
  if (lsa.nRanks != size) {
    *why = "rank " + std::to_string(rank) + " reaches " + std::to_string(lsa.nRanks) + " of the " +
           std::to_string(size) +
           " ranks by load/store (its LSA team); ranks on other nodes, or GPUs without P2P access, need the host API "
           "all_to_all_v";
    return nullptr;
  }
  try {
    return std::make_unique<LsaAllToAllImpl>(comm, rank, size, window_bytes, ctas);
  } catch (const InvalidArgument& e) {
    // ncclInvalidUsage: this communicator has no symmetric memory support (NCCL decides it
    // the same way on every rank: cuMem off, NCCL_WIN_ENABLE=0, or GPUs without direct P2P).
    *why = std::string("NCCL refused the symmetric window or the device communicator: ") + e.what();
    return nullptr;
  }
}

#else  // NCCL headers older than 2.28

std::unique_ptr<LsaAllToAll> LsaAllToAll::create(ncclComm_t, int, int, size_t, int, std::string* why) {
  *why = "this build's NCCL headers are " + version_text(NCCL_VERSION_CODE) +
         "; the device API needs NCCL 2.28 or newer at build and run time";
  return nullptr;
}

#endif

}  // namespace switchyard::comm::nccl_detail
