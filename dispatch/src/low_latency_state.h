// Buffer::LowLatencyState: the pre-allocated buffers and last routing of the low-latency
// mode (private; complete type needed wherever a Buffer is constructed or destroyed).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ll_window.h"
#include "row_exchange.h"
#include "row_window.h"
#include "switchyard/dispatch/buffer.h"

namespace switchyard::dispatch {

// Staging memory of the normal mode, kept between calls so that repeated dispatches do not
// fault in fresh pages (one call at a time per Buffer).
struct Buffer::Workspace {
  std::unique_ptr<detail::RowWindow> window;  // same-node rows through shared memory (row_window.h), or null
  uint32_t window_seq = 0;                     // dispatch calls that used the window
  uint32_t window_combine_seq = 0;             // combine reductions that used the window
  detail::Arrival arrival_a, arrival_b;
  detail::RawBytes wire, wire_a;
  std::vector<detail::RawBytes> packed;
  std::vector<detail::RawBytes> returned, returned_a;  // combine: rows back in stage B (or flat), stage A
};

struct Buffer::LowLatencyState {
  LowLatencyState(int r, int l, int64_t h, int64_t s, int64_t tmax) : layout(r, l, h, s, tmax) {}
  detail::LlLayout layout;
  // Shared-memory window (when the exchange has none, a private one: every other rank is
  // then reached by messages).
  std::unique_ptr<PeerWindow> window;
  std::vector<uint8_t*> base;  // [R] window of each rank as mapped here, nullptr = messages
  uint32_t dispatch_seq = 0, combine_seq = 0;
  bool broken = false;  // a hook failed: the peers' sequence is unknown
  // Cross-node message areas (header + Tmax dedup slots), reused by every call.
  std::vector<std::vector<uint8_t>> send, recv;
  std::vector<uint8_t> token;                 // one cast token (payload + scales)
  std::vector<int32_t> count;                 // [L] of the last dispatch (the view's counts)
  // Routing of the last dispatch (for combine).
  int64_t T = 0;
  int K = 0;
  bool fp8 = true;
  int parity = 0;                                     // of the last dispatch
  std::vector<std::vector<int32_t>> sent;             // [R] tokens sent to each rank, in order
  std::vector<int64_t> arrived;                       // [R] tokens received from each rank
  std::vector<std::vector<uint8_t>> back_send, back_recv;  // cross-node combine messages
  std::vector<float> acc;                             // [Tmax x H] combine sums
  std::vector<uint16_t> y;                            // [Tmax x H]
  std::unique_ptr<PendingExchange> pending;
  bool hook_outstanding = false;
  TrafficStats stats;
};

}  // namespace switchyard::dispatch
