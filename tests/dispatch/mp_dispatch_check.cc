// Multi-process check of dispatch over the real comm library (run through sy-run): the
// sy-dispatch-perf checks without the timing, at a small size: Buffer vs the naive and
// rank-deduplicated references (payload bit for bit, combine within BF16 rounding), the
// closed form combine(dispatch(x)) = sum_k w_k x, wire bytes == prediction, and a
// low-latency round trip. Exit code 0 when every check passed on every rank.
#include <iostream>
#include <string>

#include "switchyard/comm/communicator.h"
#include "switchyard/dispatch/perf.h"

int main(int argc, char** argv) {
  using namespace switchyard;
  try {
    auto comm = comm::Communicator::init();
    auto ex = dispatch::make_comm_exchange(comm);
    bool ok = true;
    for (bool two_hop : {true, false}) {
      dispatch::PerfOptions o;
      o.num_tokens = argc > 1 ? std::stoll(argv[1]) : 96;
      o.hidden = 512;
      o.num_experts = 48;
      o.top_k = 6;
      o.num_groups = 4;
      o.top_groups = 2;
      o.skew = two_hop ? 0.0 : 3.0;
      o.two_hop = two_hop;
      o.low_latency = true;
      o.ll_tokens = 32;
      dispatch::PerfReport rep = dispatch::run_dispatch_checks(*ex, o);
      if (comm->rank() == 0 || !rep.checks_passed) std::cout << rep.text() << std::flush;
      ok = ok && rep.checks_passed;
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "mp_dispatch_check: " << e.what() << "\n";
    return 2;
  }
}
