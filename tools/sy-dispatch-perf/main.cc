// sy-dispatch-perf: checks dispatch/combine against the naive and rank-deduplicated flat
// references, then times FP8/BF16 dispatch and BF16 combine (and optionally the low-latency
// mode) with logical and wire GB/s. Run on ranks: sy-run -n 4 --nodes 2 -- sy-dispatch-perf
// Output (rank 0): a text table, or JSON with --json. Exit code 1 when a check fails.
#include <gflags/gflags.h>
#include <malloc.h>

#include <iostream>

#include "switchyard/comm/communicator.h"
#include "switchyard/dispatch/perf.h"

DEFINE_int64(tokens, 4096, "tokens per rank");
DEFINE_int64(hidden, 7168, "hidden size");
DEFINE_int32(experts, 256, "routed experts");
DEFINE_int32(topk, 8, "experts per token");
DEFINE_int32(groups, 8, "expert groups");
DEFINE_int32(top_groups, 4, "groups kept per token");
DEFINE_double(skew, 0.0, "router score bonus toward low expert ids (0 = uniform)");
DEFINE_int32(iters, 5, "timed runs (median)");
DEFINE_int32(warmup, 1, "untimed runs first");
DEFINE_uint64(seed, 1, "random seed");
DEFINE_bool(two_hop, true, "node-limited two-hop path when there are several nodes");
DEFINE_bool(check, true, "check against both references first");
DEFINE_bool(low_latency, false, "also time the low-latency mode");
DEFINE_bool(time_naive, true, "time the naive reference too (it is always checked)");
DEFINE_int64(ll_tokens, 128, "tokens per rank in low-latency mode");
DEFINE_bool(json, false, "print JSON instead of text");
DEFINE_bool(keep_freed_memory, true,
            "keep freed memory in the process (mallopt) so that every call's outputs do not page-fault fresh "
            "pages, as PyTorch's caching allocator does for DeepEP's tests; applies to all implementations");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("sy-run -n 4 --nodes 2 -- sy-dispatch-perf [--tokens 4096] [--json]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  using namespace switchyard;
  if (FLAGS_keep_freed_memory) {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // large blocks come from the heap, not fresh mmaps
    mallopt(M_TRIM_THRESHOLD, -1);       // and freed ones are not given back
  }
  try {
    auto comm = comm::Communicator::init();
    dispatch::PerfOptions o;
    o.num_tokens = FLAGS_tokens;
    o.hidden = FLAGS_hidden;
    o.num_experts = FLAGS_experts;
    o.top_k = FLAGS_topk;
    o.num_groups = FLAGS_groups;
    o.top_groups = FLAGS_top_groups;
    o.skew = FLAGS_skew;
    o.iters = FLAGS_iters;
    o.warmup = FLAGS_warmup;
    o.seed = FLAGS_seed;
    o.two_hop = FLAGS_two_hop;
    o.check = FLAGS_check;
    o.low_latency = FLAGS_low_latency;
    o.time_naive = FLAGS_time_naive;
    o.ll_tokens = FLAGS_ll_tokens;
    auto ex = dispatch::make_comm_exchange(comm);
    dispatch::PerfReport rep = dispatch::run_dispatch_perf(*ex, o);
    if (comm->rank() == 0) std::cout << (FLAGS_json ? rep.json() + "\n" : rep.text()) << std::flush;
    return rep.checks_passed ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "sy-dispatch-perf: " << e.what() << "\n";
    return 2;
  }
}
