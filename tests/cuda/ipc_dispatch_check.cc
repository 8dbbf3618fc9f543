// Multi-process check of the GPU intra-node dispatch/combine (run through sy-run, every
// rank on GPU 0, sharing memory through CUDA IPC) against the CPU Buffer, bit for bit
// (dispatch_compare.h). Exit 0 when every check passed on this rank; 1 on a mismatch
// (printed); 2 on an error.
#include <iostream>

#include "dispatch_compare.h"
#include "switchyard/comm/communicator.h"

int main() {
  try {
    auto comm = switchyard::comm::Communicator::init();
    int failures = 0;
    for (int64_t hidden : {200, 129}) failures += switchyard::testing::compare_ipc_dispatch_with_cpu(comm, std::cout, hidden);
    failures += switchyard::testing::compare_ipc_dispatch_with_cpu(comm, std::cout, 200, 32);
    failures += switchyard::testing::compare_low_latency_with_cpu(comm, std::cout);
    return failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "ipc_dispatch_check: " << e.what() << "\n";
    return 2;
  }
}
