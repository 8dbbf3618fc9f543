// Buffer::LowLatencyState: the pre-allocated buffers and last routing of the low-latency
// mode (private; complete type needed wherever a Buffer is constructed or destroyed).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "row_exchange.h"
#include "switchyard/dispatch/buffer.h"

namespace switchyard::dispatch {

// Staging memory of the normal mode, kept between calls so that repeated dispatches do not
// fault in fresh pages (one call at a time per Buffer).
struct Buffer::Workspace {
  detail::Arrival arrival_a, arrival_b;
  detail::RawBytes wire, wire_a;
  std::vector<detail::RawBytes> packed, returned;
  std::vector<float> acc_a;
};

struct Buffer::LowLatencyState {
  int R = 0, L = 0;
  int64_t H = 0, S = 0, Tmax = 0, slots = 0;
  size_t max_slot_bytes = 0;
  // Per peer message areas (header + Tmax slots), reused by every call.
  std::vector<std::vector<uint8_t>> send, recv;
  // Output area.
  std::vector<uint8_t> out_x;        // [L x slots x H * 2]
  std::vector<float> out_scales;     // [L x slots x S]
  std::vector<int32_t> count;        // [L]
  std::vector<int32_t> src_rank, src_token;  // [L x slots]
  std::vector<float> weight;         // [L x slots]
  std::vector<uint8_t> staging;      // [Tmax x (2H + 4S)] cast rows of this rank
  // Routing of the last dispatch (for combine).
  int64_t T = 0;
  int K = 0;
  bool fp8 = true;
  std::vector<std::vector<int32_t>> sent;             // [R] tokens sent to each peer
  std::vector<int64_t> arrived;                       // [R] rows received from each peer
  std::vector<std::vector<int64_t>> arrival_slots;    // [R] flattened (row -> up to K output slots, -1 end)
  std::vector<std::vector<uint8_t>> back_send, back_recv;  // combine messages
  std::vector<uint16_t> y;                            // [Tmax x H]
  std::unique_ptr<PendingExchange> pending;
  TrafficStats stats;
};

}  // namespace switchyard::dispatch
