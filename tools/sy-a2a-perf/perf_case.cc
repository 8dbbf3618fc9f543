// Layouts, send values and reference checks of sy-a2a-perf (see perf_case.h).
#include "perf_case.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "switchyard/common/error.h"

namespace switchyard::tools {
namespace {

using comm::DataType;
using comm::ReduceOp;

constexpr double kPoison = 9999;  // no formula below produces it

// Element j of a typed buffer, as double / from double (values are small integers, exact).
void set_elem(DataType type, void* buf, size_t j, double v) {
  switch (type) {
    case DataType::kFloat32:
      static_cast<float*>(buf)[j] = static_cast<float>(v);
      return;
    case DataType::kFloat64:
      static_cast<double*>(buf)[j] = v;
      return;
    case DataType::kInt32:
      static_cast<int32_t*>(buf)[j] = static_cast<int32_t>(v);
      return;
    case DataType::kInt64:
      static_cast<int64_t*>(buf)[j] = static_cast<int64_t>(v);
      return;
    case DataType::kBfloat16: {
      float f = static_cast<float>(v);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      static_cast<uint16_t*>(buf)[j] = static_cast<uint16_t>(bits >> 16);  // exact for these values
      return;
    }
    default:
      SY_THROW(InvalidArgument, "sy-a2a-perf: type " << comm::dtype_name(type) << " is not supported");
  }
}

double get_elem(DataType type, const void* buf, size_t j) {
  switch (type) {
    case DataType::kFloat32:
      return static_cast<const float*>(buf)[j];
    case DataType::kFloat64:
      return static_cast<const double*>(buf)[j];
    case DataType::kInt32:
      return static_cast<const int32_t*>(buf)[j];
    case DataType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(buf)[j]);
    case DataType::kBfloat16: {
      uint32_t bits = uint32_t{static_cast<const uint16_t*>(buf)[j]} << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    default:
      SY_THROW(InvalidArgument, "sy-a2a-perf: type " << comm::dtype_name(type) << " is not supported");
  }
}

// Value of element j of the chunk `src` sends to `dst` (all_to_all(_v), p2p).
double exchange_value(int src, int dst, size_t j) {
  return static_cast<double>((src * 31 + dst * 7 + j) % 241) - 120;
}
// Value of element j that `rank` contributes to all_reduce.
double reduce_value(int rank, size_t j) {
  return static_cast<double>((rank * 5 + j * 3) % 17) - 8;
}

// Elements `src` sends to `dst` in all_to_all_v: mean * (1 + imbalance * h), h in [-1, 1].
size_t v_count(size_t mean, double imbalance, int src, int dst) {
  uint32_t h = static_cast<uint32_t>(src) * 2654435761u ^ static_cast<uint32_t>(dst) * 40503u;
  h ^= h >> 13;
  double unit = (h % 2001) / 1000.0 - 1.0;
  return static_cast<size_t>(std::llround(static_cast<double>(mean) * (1.0 + imbalance * unit)));
}

}  // namespace

const char* perf_op_name(PerfOp op) {
  switch (op) {
    case PerfOp::kAllToAll:
      return "all_to_all";
    case PerfOp::kAllToAllV:
      return "all_to_all_v";
    case PerfOp::kAllReduce:
      return "all_reduce";
    case PerfOp::kP2P:
      return "p2p";
  }
  return "unknown";
}

PerfOp parse_perf_op(const std::string& name) {
  for (PerfOp op : {PerfOp::kAllToAll, PerfOp::kAllToAllV, PerfOp::kAllReduce, PerfOp::kP2P}) {
    if (name == perf_op_name(op)) return op;
  }
  SY_THROW(InvalidArgument, "--op " << name << " is not one of all_to_all, all_to_all_v, all_reduce, p2p");
}

DataType parse_dtype(const std::string& name) {
  if (name == "float" || name == "float32") return DataType::kFloat32;
  if (name == "double" || name == "float64") return DataType::kFloat64;
  if (name == "bfloat16" || name == "bf16") return DataType::kBfloat16;
  if (name == "int32") return DataType::kInt32;
  if (name == "int64") return DataType::kInt64;
  SY_THROW(InvalidArgument, "--dtype " << name << " is not one of float32, float64, bfloat16, int32, int64");
}

ReduceOp parse_reduce_op(const std::string& name) {
  if (name == "sum") return ReduceOp::kSum;
  if (name == "max") return ReduceOp::kMax;
  if (name == "min") return ReduceOp::kMin;
  SY_THROW(InvalidArgument, "--redop " << name << " is not one of sum, max, min");
}

double bus_factor(PerfOp op, int ranks) {
  switch (op) {
    case PerfOp::kAllToAll:
    case PerfOp::kAllToAllV:
      return static_cast<double>(ranks - 1) / ranks;
    case PerfOp::kAllReduce:
      return 2.0 * (ranks - 1) / ranks;
    case PerfOp::kP2P:
      return 1.0;
  }
  return 1.0;
}

PerfLayout make_layout(PerfOp op, size_t bytes, DataType type, int rank, int ranks, double imbalance) {
  SY_REQUIRE(imbalance >= 0 && imbalance < 1, "--imbalance " << imbalance << " is outside [0, 1)");
  const size_t el = comm::dtype_size(type);
  PerfLayout l;
  if (op == PerfOp::kAllReduce || op == PerfOp::kP2P) {
    l.count = std::max<size_t>(1, bytes / el);
    l.send_elems = l.recv_elems = l.count;
    return l;
  }
  const size_t mean = std::max<size_t>(1, bytes / (el * static_cast<size_t>(ranks)));
  l.send_counts.resize(ranks);
  l.recv_counts.resize(ranks);
  l.send_displs.resize(ranks);
  l.recv_displs.resize(ranks);
  for (int p = 0; p < ranks; ++p) {
    bool v = op == PerfOp::kAllToAllV;
    l.send_counts[p] = v ? v_count(mean, imbalance, rank, p) : mean;
    l.recv_counts[p] = v ? v_count(mean, imbalance, p, rank) : mean;
    l.send_displs[p] = l.send_elems;
    l.recv_displs[p] = l.recv_elems;
    l.send_elems += l.send_counts[p];
    l.recv_elems += l.recv_counts[p];
  }
  l.count = l.send_elems;
  return l;
}

void fill_send(PerfOp op, const PerfLayout& l, DataType type, int rank, int ranks, void* send) {
  if (op == PerfOp::kAllReduce) {
    for (size_t j = 0; j < l.count; ++j) set_elem(type, send, j, reduce_value(rank, j));
  } else if (op == PerfOp::kP2P) {
    for (size_t j = 0; j < l.count; ++j) set_elem(type, send, j, exchange_value(rank, 1 - rank, j));
  } else {
    for (int p = 0; p < ranks; ++p) {
      for (size_t j = 0; j < l.send_counts[p]; ++j)
        set_elem(type, send, l.send_displs[p] + j, exchange_value(rank, p, j));
    }
  }
}

void poison_recv(const PerfLayout& l, DataType type, void* recv) {
  for (size_t j = 0; j < l.recv_elems; ++j) set_elem(type, recv, j, kPoison);
}

size_t count_wrong(PerfOp op, const PerfLayout& l, DataType type, ReduceOp redop, int rank, int ranks,
                   const void* recv) {
  size_t wrong = 0;
  if (op == PerfOp::kAllReduce) {
    for (size_t j = 0; j < l.count; ++j) {
      double expected = reduce_value(0, j);
      for (int r = 1; r < ranks; ++r) {
        double v = reduce_value(r, j);
        expected = redop == ReduceOp::kSum   ? expected + v
                   : redop == ReduceOp::kMax ? std::max(expected, v)
                                             : std::min(expected, v);
      }
      wrong += get_elem(type, recv, j) != expected;
    }
  } else if (op == PerfOp::kP2P) {
    if (rank != 1) return 0;
    for (size_t j = 0; j < l.count; ++j) wrong += get_elem(type, recv, j) != exchange_value(0, 1, j);
  } else {
    for (int p = 0; p < ranks; ++p) {
      for (size_t j = 0; j < l.recv_counts[p]; ++j) {
        wrong += get_elem(type, recv, l.recv_displs[p] + j) != exchange_value(p, rank, j);
      }
    }
  }
  return wrong;
}

}  // namespace switchyard::tools
