// One benchmark point of sy-a2a-perf: which operation, how many elements go where, the
// values every rank sends and the independent reference its receive is checked against.
//
// Conventions follow nccl-tests. `count` is the number of elements each rank sends in one
// call (all_to_all(_v): over all peers, own chunk included; all_reduce: the vector length;
// p2p: one message from rank 0 to rank 1), size = count * element size, algbw = size / time
// and busbw = algbw * factor with factor (N-1)/N for all_to_all(_v), 2(N-1)/N for
// all_reduce and 1 for p2p.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "switchyard/comm/types.h"

namespace switchyard::tools {

enum class PerfOp { kAllToAll, kAllToAllV, kAllReduce, kP2P };

// "all_to_all", "all_to_all_v", "all_reduce", "p2p"; parse_perf_op throws InvalidArgument.
const char* perf_op_name(PerfOp op);
PerfOp parse_perf_op(const std::string& name);
comm::DataType parse_dtype(const std::string& name);  // float32|float|float64|double|bfloat16|int32|int64
comm::ReduceOp parse_reduce_op(const std::string& name);  // sum|max|min
double bus_factor(PerfOp op, int ranks);

// Element counts and displacements (in elements) of one call on one rank.
struct PerfLayout {
  size_t count = 0;  // elements this rank sends (nccl-tests "count")
  std::vector<size_t> send_counts, send_displs;  // per peer (all_to_all(_v))
  std::vector<size_t> recv_counts, recv_displs;
  size_t send_elems = 0, recv_elems = 0;  // buffer sizes needed
};

// Layout for `bytes` requested per rank. all_to_all rounds to a whole number of elements
// per peer (at least one); all_to_all_v gives peer p of rank r a share that varies by
// +-`imbalance` (0 = equal) around the mean, the same formula on both sides.
PerfLayout make_layout(PerfOp op, size_t bytes, comm::DataType type, int rank, int ranks, double imbalance);

// Fills `send` with the values this rank sends (small integers, exact in every type).
void fill_send(PerfOp op, const PerfLayout& layout, comm::DataType type, int rank, int ranks, void* send);
// Fills `recv` with a value no correct result has (so unwritten elements are caught).
void poison_recv(const PerfLayout& layout, comm::DataType type, void* recv);
// Number of received elements that differ from the reference computed from the formulas
// (all_reduce: the sum/max/min over ranks in double, exact for these values).
size_t count_wrong(PerfOp op, const PerfLayout& layout, comm::DataType type, comm::ReduceOp redop, int rank, int ranks,
                   const void* recv);

}  // namespace switchyard::tools
