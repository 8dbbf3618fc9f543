// Tests of sy-a2a-perf's layouts and result checks (tools/sy-a2a-perf/perf_case.h): the
// checker must accept a correct exchange and count exactly the elements that are wrong.
// The exchange here is simulated with naive loops (an independent all_to_all_v and
// all_reduce over in-memory "ranks").
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "perf_case.h"
#include "switchyard/common/error.h"

namespace switchyard::tools {
namespace {

using comm::DataType;
using comm::ReduceOp;

// Runs a simulated all_to_all(_v) over `ranks` in-memory ranks; returns each rank's recv.
std::vector<std::vector<uint8_t>> simulate_exchange(PerfOp op, size_t bytes, DataType type, int ranks, double imbalance,
                                                    std::vector<PerfLayout>& layouts) {
  const size_t el = comm::dtype_size(type);
  std::vector<std::vector<uint8_t>> send(ranks), recv(ranks);
  layouts.clear();
  for (int r = 0; r < ranks; ++r) {
    layouts.push_back(make_layout(op, bytes, type, r, ranks, imbalance));
    send[r].resize(layouts[r].send_elems * el);
    recv[r].resize(layouts[r].recv_elems * el);
    fill_send(op, layouts[r], type, r, ranks, send[r].data());
    poison_recv(layouts[r], type, recv[r].data());
  }
  for (int src = 0; src < ranks; ++src) {
    for (int dst = 0; dst < ranks; ++dst) {
      EXPECT_EQ(layouts[src].send_counts[dst], layouts[dst].recv_counts[src]) << src << "->" << dst;
      std::memcpy(recv[dst].data() + layouts[dst].recv_displs[src] * el,
                  send[src].data() + layouts[src].send_displs[dst] * el, layouts[src].send_counts[dst] * el);
    }
  }
  return recv;
}

TEST(A2aPerfCaseTest, CorrectAllToAllHasNoWrongElementsAndCorruptionIsCounted) {
  for (DataType type : {DataType::kFloat32, DataType::kBfloat16, DataType::kInt64}) {
    for (int ranks : {1, 2, 3, 4}) {
      std::vector<PerfLayout> layouts;
      auto recv = simulate_exchange(PerfOp::kAllToAll, 4096, type, ranks, 0, layouts);
      for (int r = 0; r < ranks; ++r) {
        // Whole elements per peer, rounded down: 4096 B over 3 ranks of int64 is 170 each.
        const size_t per_peer = 4096 / (ranks * comm::dtype_size(type));
        for (int p = 0; p < ranks; ++p) EXPECT_EQ(layouts[r].send_counts[p], per_peer);
        EXPECT_EQ(layouts[r].count, per_peer * ranks);
        EXPECT_EQ(count_wrong(PerfOp::kAllToAll, layouts[r], type, ReduceOp::kSum, r, ranks, recv[r].data()), 0u);
      }
      // Two flipped bytes in two different elements of rank 0's receive: two wrong elements.
      recv[0][0] ^= 0x40;
      recv[0][recv[0].size() - 1] ^= 0x40;
      EXPECT_EQ(count_wrong(PerfOp::kAllToAll, layouts[0], type, ReduceOp::kSum, 0, ranks, recv[0].data()), 2u)
          << comm::dtype_name(type) << " ranks " << ranks;
    }
  }
}

TEST(A2aPerfCaseTest, UnevenAllToAllVLayoutsAgreeBetweenRanks) {
  std::vector<PerfLayout> layouts;
  auto recv = simulate_exchange(PerfOp::kAllToAllV, 1 << 16, DataType::kFloat32, 4, 0.5, layouts);
  bool uneven = false;
  for (int r = 0; r < 4; ++r) {
    for (int p = 0; p < 4; ++p) uneven |= layouts[r].send_counts[p] != layouts[0].send_counts[0];
    EXPECT_EQ(count_wrong(PerfOp::kAllToAllV, layouts[r], DataType::kFloat32, ReduceOp::kSum, r, 4, recv[r].data()),
              0u);
  }
  EXPECT_TRUE(uneven) << "imbalance 0.5 gave equal counts";
  // An element left unwritten (still poisoned) is wrong.
  poison_recv(layouts[2], DataType::kFloat32, recv[2].data());
  EXPECT_EQ(count_wrong(PerfOp::kAllToAllV, layouts[2], DataType::kFloat32, ReduceOp::kSum, 2, 4, recv[2].data()),
            layouts[2].recv_elems);
}

TEST(A2aPerfCaseTest, AllReduceReferenceMatchesNaiveReduction) {
  for (ReduceOp redop : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    const int ranks = 3;
    PerfLayout l = make_layout(PerfOp::kAllReduce, 1000 * 4, DataType::kFloat32, 0, ranks, 0);
    ASSERT_EQ(l.count, 1000u);
    std::vector<std::vector<float>> in(ranks, std::vector<float>(l.count));
    for (int r = 0; r < ranks; ++r) fill_send(PerfOp::kAllReduce, l, DataType::kFloat32, r, ranks, in[r].data());
    std::vector<float> out(l.count);
    for (size_t j = 0; j < l.count; ++j) {
      out[j] = in[0][j];
      for (int r = 1; r < ranks; ++r) {
        out[j] = redop == ReduceOp::kSum   ? out[j] + in[r][j]
                 : redop == ReduceOp::kMax ? std::max(out[j], in[r][j])
                                           : std::min(out[j], in[r][j]);
      }
    }
    EXPECT_EQ(count_wrong(PerfOp::kAllReduce, l, DataType::kFloat32, redop, 1, ranks, out.data()), 0u);
    out[500] += 1;
    EXPECT_EQ(count_wrong(PerfOp::kAllReduce, l, DataType::kFloat32, redop, 1, ranks, out.data()), 1u);
  }
}

TEST(A2aPerfCaseTest, BadNamesAreRejected) {
  EXPECT_THROW(parse_perf_op("alltoall"), InvalidArgument);
  EXPECT_THROW(parse_dtype("float16"), InvalidArgument);
  EXPECT_THROW(parse_reduce_op("prod"), InvalidArgument);
  EXPECT_THROW(make_layout(PerfOp::kAllToAllV, 64, DataType::kFloat32, 0, 2, 1.5), InvalidArgument);
  EXPECT_EQ(parse_perf_op("all_to_all_v"), PerfOp::kAllToAllV);
  EXPECT_DOUBLE_EQ(bus_factor(PerfOp::kAllReduce, 4), 1.5);
  EXPECT_DOUBLE_EQ(bus_factor(PerfOp::kAllToAll, 4), 0.75);
}

}  // namespace
}  // namespace switchyard::tools
