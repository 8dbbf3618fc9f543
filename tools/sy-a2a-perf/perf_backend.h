// What sy-a2a-perf times: one implementation of the operations (Switchyard's comm library,
// or Open MPI as the baseline) behind one small interface, so both run the same sweep in
// the same job with the same buffers.
#pragma once

#include "perf_case.h"

namespace switchyard::tools {

// One call of the operation under test. Buffers hold layout.send_elems / recv_elems
// elements of `type`; p2p sends from rank 0 to rank 1 (other ranks idle).
struct PerfCall {
  PerfOp op = PerfOp::kAllToAll;
  const PerfLayout* layout = nullptr;
  comm::DataType type = comm::DataType::kFloat32;
  comm::ReduceOp redop = comm::ReduceOp::kSum;
  const void* send = nullptr;
  void* recv = nullptr;
};

// Blocking calls, issued by every rank in the same order. Not thread-safe.
class PerfBackend {
 public:
  virtual ~PerfBackend() = default;
  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // True when this backend can run the call (MPI has no bfloat16 reductions).
  virtual bool supports(PerfOp op, comm::DataType type) const = 0;
  virtual void run(const PerfCall& call) = 0;
  // p2p end of a timed block: rank 1 sends rank 0 an empty message, so rank 0's clock
  // covers the delivery of the last message.
  virtual void p2p_ack() = 0;
  virtual void barrier() = 0;
  virtual double max_over_ranks(double v) = 0;
  virtual int64_t sum_over_ranks(int64_t v) = 0;
};

}  // namespace switchyard::tools
