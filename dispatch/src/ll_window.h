// The low-latency window: where same-node peers write a rank's slots directly, and the
// flag protocol that tells the rank they are complete (private to low_latency.cc).
//
// Layout of one rank's window (byte offsets from LlLayout, each area 4 KiB aligned), for
// each parity b in {0, 1} (call n uses parity n % 2, so consecutive calls never race):
//   dispatch area
//     flag[R]      one 64-byte line per source rank: {uint32 seq, int32 tokens, int32 hidden,
//                  int32 fp8}; the source writes the fields, then seq with release
//     count[L]     uint32 rows of each local expert, claimed by fetch_add (the sources claim
//                  a contiguous block per expert, so rows stay packed without a count exchange)
//     x            [L x slots x 2H] bytes: expert-major rows, FP8 rows use stride H
//     scales       [L x slots x S] float
//     src_rank, src_token  [L x slots] int32
//     route        [R x Tmax] RouteEntry: per (source, token) the rows it landed in and their
//                  weights, in top-k order (what combine sums)
//   combine area
//     flag[R]      as above (seq only)
//     partial      [R x Tmax x H] BF16: rank r's weighted sum for each of this rank's tokens
// A rank resets its counters of parity 1 - b at the start of call n (b = n % 2); a source
// claims on them only in call n + 1, after it saw this rank's call-n flag, so the reset
// happens before. The same chain protects the data of call n - 1 (views stay valid until
// the next dispatch).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "seq_flag.h"
#include "switchyard/dispatch/buffer.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch::detail {

struct LlFlag {
  uint32_t seq;
  int32_t tokens;
  int32_t hidden;
  int32_t fp8;
  uint8_t pad[48];
};
static_assert(sizeof(LlFlag) == 64);

struct RouteEntry {
  int32_t token;
  int32_t n;
  int32_t row[kLowLatencyMaxTopK];  // j * slots + i
  float weight[kLowLatencyMaxTopK];
};

struct LlLayout {
  int R = 0, L = 0;
  int64_t H = 0, S = 0, Tmax = 0, slots = 0;
  size_t flags = 0, count = 0, x = 0, scales = 0, src_rank = 0, src_token = 0, route = 0;  // in a dispatch area
  size_t c_flags = 0, c_partial = 0;                                                   // in a combine area
  size_t dispatch_bytes = 0, combine_bytes = 0;

  static size_t align(size_t v) { return (v + 4095) & ~size_t(4095); }
  LlLayout(int r, int l, int64_t h, int64_t s, int64_t tmax) : R(r), L(l), H(h), S(s), Tmax(tmax), slots(r * tmax) {
    const size_t rows = static_cast<size_t>(L) * slots;
    size_t at = 0;
    flags = at;
    at = align(at + R * sizeof(LlFlag));
    count = at;
    at = align(at + L * sizeof(uint32_t));
    x = at;
    at = align(at + rows * 2 * H);
    scales = at;
    at = align(at + rows * S * sizeof(float));
    src_rank = at;
    at = align(at + rows * sizeof(int32_t));
    src_token = at;
    at = align(at + rows * sizeof(int32_t));
    route = at;
    at = align(at + static_cast<size_t>(R) * Tmax * sizeof(RouteEntry));
    dispatch_bytes = at;
    at = 0;
    c_flags = at;
    at = align(at + R * sizeof(LlFlag));
    c_partial = at;
    at = align(at + static_cast<size_t>(R) * Tmax * H * sizeof(uint16_t));
    combine_bytes = at;
  }
  size_t window_bytes() const { return 2 * (dispatch_bytes + combine_bytes); }
  size_t dispatch_area(int parity) const { return parity * dispatch_bytes; }
  size_t combine_area(int parity) const { return 2 * dispatch_bytes + parity * combine_bytes; }
};

// Publishes a flag: the fields were written before; seq is stored with release, then any
// sleeper is woken (seq_flag.h).
inline void post_flag(LlFlag* f, uint32_t seq) { post_seq(&f->seq, seq); }

// Waits until f->seq == seq (acquire), checking the peer; Timeout after `timeout` (seq_flag.h).
inline void wait_flag(LlFlag* f, uint32_t seq, PeerWindow& win, int peer, int me, std::chrono::milliseconds timeout,
                      const char* what) {
  wait_seq(&f->seq, seq, win, peer, me, timeout, what);
}

}  // namespace switchyard::dispatch::detail
