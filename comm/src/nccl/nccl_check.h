// Internal to comm/src/nccl: turns an NCCL result into the error class of
// nccl_communicator.h (InvalidArgument, PeerFailure, IoError, InternalError), naming the
// call, the rank and NCCL's last error text. Shared by the host API and the device API files.
#pragma once

#include <nccl.h>

namespace switchyard::comm::nccl_detail {

// Returns when r == ncclSuccess, else throws. `comm` may be nullptr (no last-error text).
void check_nccl(ncclResult_t r, ncclComm_t comm, const char* call, int rank, const char* file, int line);

}  // namespace switchyard::comm::nccl_detail

#define SY_NCCL_CHECK_RANK(call, nccl_comm, rank_index) \
  ::switchyard::comm::nccl_detail::check_nccl((call), (nccl_comm), #call, (rank_index), __FILE__, __LINE__)
