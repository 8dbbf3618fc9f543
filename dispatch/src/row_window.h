// RowWindow: normal-mode dispatch rows between the ranks of one node through shared memory
// (private to the dispatch sources).
//
// Over messages a row is copied three times on a node: packed into the sender's staging,
// copied by the transport into the receiver's staging (CMA), and copied into the result (or
// summed, in combine). With a RowWindow the sender writes each row (combine: each partial
// sum) straight into the receiver's window (the region reserved for that sender) and the
// receiver reads it from there: one copy less, and no page pinning in the kernel.
//
// Layout of one rank's window, for each stage s (dispatch A, dispatch B = two-hop
// forwarding, and the combine rows going back over the last dispatch stage):
//   ready[s][R]     64-byte flags written by each source: {uint32 seq, rows, hidden,
//                   experts, row_bytes}; seq is stored last with release
//   consumed[s][R]  written by this rank once it no longer reads the source's rows
//   region[s][l]    max_rows(s) x row_bytes(s) bytes for the source of local rank l
// Call n (seq n, the same on every rank: calls are collective): a source waits until the
// receiver's consumed flag for it reads the seq of the last call that used the region (it
// is free again), writes the rows, then
// publishes ready = n; the receiver waits for ready = n, reads the rows in place, and posts
// consumed = n when its call is done with them (release()). Waits spin, yield, then sleep on
// a futex; they check the peer's process (PeerFailure) and throw Timeout naming the peer.
// Pairs whose memory is not mapped (other nodes, or mapping failed on either side) and calls
// whose rows are wider than max_row_bytes use messages.
// Threading: one call at a time per Buffer (like the Buffer); the window is shared with peers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "row_exchange.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch::detail {

class RowWindow {
 public:
  // 0: dispatch stage A (flat), 1: dispatch stage B (two-hop forwarding), 2: combine rows
  // back over the last dispatch stage (flat A or two-hop B).
  static constexpr int kStages = 3;
  // Collective over ex (opens a PeerWindow). Returns nullptr when the exchange has no shared
  // memory (every rank then returns nullptr). Stage s holds max_rows[s] rows of up to
  // row_bytes[s] bytes per source.
  static std::unique_ptr<RowWindow> open(PeerExchange& ex, const int64_t max_rows[kStages],
                                         const size_t row_bytes[kStages]);
  // Bytes of one rank's window (open() maps one per rank of the node).
  static size_t window_bytes(const PeerExchange& ex, const int64_t max_rows[kStages], const size_t row_bytes[kStages]);

  // True when rows to/from `peer` (not this rank) go through memory.
  bool reaches(int peer) const { return peer != me_ && base_[peer] != nullptr; }
  bool fits(int stage, size_t row_bytes) const { return row_bytes <= row_bytes_[stage] && region_[stage] > 0; }

  // Sender: waits until `peer` released this rank's stage-s region of call seq - 1 and returns it.
  uint8_t* claim(int peer, int stage, uint32_t seq);
  // Sender: announces `rows` rows of call seq in the claimed region.
  void publish(int peer, int stage, uint32_t seq, int64_t rows, const StageFingerprint& fp, int64_t row_bytes);
  // Receiver: waits for peer's rows of call seq, checks them against fp (InvalidArgument as
  // for messages) and returns the region; *rows gets the count.
  const uint8_t* wait_rows(int peer, int stage, uint32_t seq, const StageFingerprint& fp, int64_t max_rows,
                           int64_t* rows);
  // Receiver: this rank no longer reads peer's stage-s rows of call seq.
  void release(int peer, int stage, uint32_t seq);

  struct Flag;

 private:
  RowWindow(PeerExchange& ex, std::unique_ptr<PeerWindow> win, const int64_t max_rows[kStages],
            const size_t row_bytes[kStages]);
  Flag* ready(int owner, int stage, int src);
  Flag* consumed(int owner, int stage, int src);
  void wait_seq(Flag* f, uint32_t seq, int peer, const char* what);

  PeerExchange& ex_;
  std::unique_ptr<PeerWindow> win_;
  int me_ = 0, R_ = 0;
  size_t row_bytes_[kStages] = {};   // widest row of stage s
  size_t region_[kStages] = {};      // bytes of one source's region in stage s
  size_t stage_base_[kStages] = {};  // offset of stage s's flags
  size_t regions_at_[kStages] = {};  // offset of stage s's first region
  std::vector<uint8_t*> base_;           // [R] each rank's window as mapped here, nullptr = messages
  std::vector<uint32_t> last_sent_[kStages];  // [R] seq of this rank's last rows in each peer's region
  std::chrono::milliseconds timeout_;
};

}  // namespace switchyard::dispatch::detail
