// The rank program of the network-namespace end-to-end test (netns_e2e.sh): each rank of
// a job spread over two network namespaces runs all_to_all_v with uneven counts (zero
// included) and all_reduce (float32 sum, int64 max), and checks every element against a
// naive reference computed from the same formulas. Prints one line per rank and exits 0
// when everything matched, 1 otherwise.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

#include "switchyard/comm/communicator.h"

namespace {

using switchyard::comm::Communicator;
using switchyard::comm::DataType;
using switchyard::comm::ReduceOp;

// Elements rank `src` sends to rank `dst`: zero for some pairs, up to ~300 K (1.2 MB).
size_t count_between(int src, int dst) {
  int k = (src * 3 + dst * 5) % 7;
  return k == 0 ? 0 : static_cast<size_t>(k) * 43691 + static_cast<size_t>(src);
}
float a2a_value(int src, int dst, size_t j) {
  return static_cast<float>((src * 1000 + dst * 10 + j) % 9973);
}
float reduce_value(int rank, size_t j) {
  return static_cast<float>((rank * 7 + j) % 13);
}

int run() {
  std::shared_ptr<Communicator> comm = Communicator::init();
  const int rank = comm->rank(), n = comm->size();
  size_t wrong = 0;

  std::vector<size_t> sc(n), sd(n), rc(n), rd(n);
  size_t stotal = 0, rtotal = 0;
  for (int p = 0; p < n; ++p) {
    sc[p] = count_between(rank, p);
    rc[p] = count_between(p, rank);
    sd[p] = stotal;
    rd[p] = rtotal;
    stotal += sc[p];
    rtotal += rc[p];
  }
  std::vector<float> send(stotal), recv(rtotal, -1.0f);
  for (int p = 0; p < n; ++p) {
    for (size_t j = 0; j < sc[p]; ++j) send[sd[p] + j] = a2a_value(rank, p, j);
  }
  comm->all_to_all_v(send.data(), sc.data(), sd.data(), recv.data(), rc.data(), rd.data(), DataType::kFloat32);
  for (int p = 0; p < n; ++p) {
    for (size_t j = 0; j < rc[p]; ++j) wrong += recv[rd[p] + j] != a2a_value(p, rank, j);
  }

  const size_t len = 100003;
  std::vector<float> x(len), sum(len, -1.0f);
  for (size_t j = 0; j < len; ++j) x[j] = reduce_value(rank, j);
  comm->all_reduce(x.data(), sum.data(), len, DataType::kFloat32, ReduceOp::kSum);
  for (size_t j = 0; j < len; ++j) {
    float expected = 0;
    for (int r = 0; r < n; ++r) expected += reduce_value(r, j);
    wrong += sum[j] != expected;
  }

  int64_t mine = 1000 + rank * 17 % 5, top = -1;
  comm->all_reduce(&mine, &top, 1, DataType::kInt64, ReduceOp::kMax);
  int64_t expected_top = 0;
  for (int r = 0; r < n; ++r) expected_top = std::max<int64_t>(expected_top, 1000 + r * 17 % 5);
  wrong += top != expected_top;

  comm->barrier();
  std::printf("netns check: rank %d of %d on node %d: %zu wrong elements\n", rank, n, comm->node(), wrong);
  return wrong == 0 ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netns check: %s\n", e.what());
    return 1;
  }
}
