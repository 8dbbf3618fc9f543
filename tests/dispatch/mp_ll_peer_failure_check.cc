// Multi-process check (sy-run, 2 ranks on one node): a peer that dies in the middle of a
// low-latency dispatch is reported as PeerFailure naming it, well within the exchange's
// timeout, and the Buffer then refuses further low-latency calls.
//
// Both ranks run one complete dispatch + combine round over the shared-memory window. Then
// rank 0 starts its second dispatch (its rows are written into rank 1's window and it waits
// for rank 1's flag) while rank 1 exits abruptly after kDeathDelay without posting that flag
// (_exit: no destructors, no goodbye, as a crash; exit status 0 so that sy-run does not stop
// the job). Rank 0's flag wait checks the peer's pid every ~10 ms and must throw PeerFailure
// with peer() == 1 and the window's "exited" message (a comm-level heartbeat would take
// SWITCHYARD_COMM_HEARTBEAT_TIMEOUT_MS, 10 s by default, and the exchange Timeout 60 s).
// Rank 0 then exits with _Exit too (the communicator's teardown would wait for rank 1).
// Exit status 0 when every check passed.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "switchyard/comm/communicator.h"
#include "switchyard/common/error.h"
#include "switchyard/dispatch/buffer.h"

namespace {

using namespace switchyard;
constexpr auto kDeathDelay = std::chrono::milliseconds(300);
constexpr auto kDetectBound = std::chrono::seconds(5);

[[noreturn]] void finish(bool ok, const std::string& what) {
  std::cout << (ok ? "ok   " : "FAIL ") << what << std::endl;
  std::_Exit(ok ? 0 : 1);
}

}  // namespace

int main() {
  try {
    auto comm = comm::Communicator::init();
    const int me = comm->rank();
    if (comm->size() != 2) finish(false, "run with 2 ranks on one node");
    auto ex = dispatch::make_comm_exchange(comm);
    const int E = 8, K = 2, T = 16;
    const int64_t H = 256;
    dispatch::Buffer buf(ex, {E, H, T, true, T});
    std::mt19937 rng(7 + me);
    std::vector<uint16_t> x(T * H);
    for (auto& v : x) v = static_cast<uint16_t>(0x3f80 + rng() % 64);  // BF16 around 1
    std::vector<int64_t> topk(T * K);
    std::vector<float> w(T * K, 0.5f);
    for (int t = 0; t < T; ++t) {  // one expert on each rank: every token reaches both
      topk[t * K] = rng() % (E / 2);
      topk[t * K + 1] = E / 2 + rng() % (E / 2);
    }
    dispatch::LowLatencyDispatchArgs args;
    args.x = x.data();
    args.topk_idx = topk.data();
    args.topk_weights = w.data();
    args.num_tokens = T;
    args.top_k = K;
    // Round 1: complete on both ranks.
    dispatch::LowLatencyView v = buf.low_latency_dispatch(args);
    int64_t rows = 0;
    for (int j = 0; j < buf.num_local_experts(); ++j) rows += v.count[j];
    std::vector<uint16_t> out(static_cast<size_t>(buf.num_local_experts()) * v.slots_per_expert * H, 0);
    buf.low_latency_combine(out.data());
    // Each rank holds one expert of every token of both ranks: 2T rows.
    if (rows != 2 * T)
      finish(false, "round 1: rank " + std::to_string(me) + " received " + std::to_string(rows) + " rows, expected " +
                        std::to_string(2 * T));
    if (me == 1) {
      std::this_thread::sleep_for(kDeathDelay);
      _exit(0);  // dies before posting its round-2 flag
    }
    // Rank 0: round 2 waits for rank 1, which dies meanwhile.
    const auto t0 = std::chrono::steady_clock::now();
    try {
      buf.low_latency_dispatch(args);
      finish(false, "round 2 completed although rank 1 died");
    } catch (const PeerFailure& e) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string msg = e.what();
      std::cout << "rank 0 got PeerFailure after " << s << " s (rank 1 died after ~"
                << std::chrono::duration<double>(kDeathDelay).count() << " s): " << msg << "\n";
      if (e.peer() != 1) finish(false, "PeerFailure names rank " + std::to_string(e.peer()) + ", not 1");
      if (msg.find("exited") == std::string::npos) finish(false, "PeerFailure did not come from the window's pid check");
      if (std::chrono::steady_clock::now() - t0 > kDetectBound) finish(false, "detected later than 5 s");
      if (ex->timeout() <= kDetectBound) finish(false, "the exchange timeout is not above the bound");
    }
    try {
      buf.low_latency_dispatch(args);
      finish(false, "the Buffer accepted a low-latency call after a failed one");
    } catch (const InvalidArgument&) {
    }
    finish(true, "PeerFailure(1) within 5 s of the start of round 2; later calls refused");
  } catch (const std::exception& e) {
    std::cerr << "mp_ll_peer_failure_check: " << e.what() << "\n";
    std::_Exit(2);
  }
}
