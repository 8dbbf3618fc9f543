// Stage primitives of dispatch and combine (private): a count exchange (the Buffer
// handshake), a row exchange with the count in each message (forward), and a reduce-back
// (the reverse of a row exchange, summing in a fixed order).
//
// A "stage" is one set of point-to-point messages: rank me sends to each peer p the rows
// listed in send[p] (indices into the stage's source rows) and receives the rows p sends.
// Arrival order is by peer ascending, then send order. Rows to itself are copied locally.
// Wire bytes count row payload sent to ranks on other nodes; headers are control bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "switchyard/comm/types.h"
#include "switchyard/dispatch/buffer.h"
#include "phase_timer.h"
#include "switchyard/dispatch/peer_exchange.h"

namespace switchyard::dispatch::detail {

// A byte buffer that is not zero-filled on resize (message staging; every byte is written
// before it is read). resize() keeps no contents and only ever grows the memory. The memory
// is its own anonymous mapping (page aligned), not malloc's heap: staging that lives as long
// as the Buffer must not sit inside the heap that the caller's short-lived tensors come from
// (glibc then trims and re-faults that heap on every step; measured on the gloo baseline).
class RawBytes {
 public:
  RawBytes() = default;
  RawBytes(RawBytes&& o) noexcept { swap(o); }
  RawBytes& operator=(RawBytes&& o) noexcept {
    swap(o);
    return *this;
  }
  RawBytes(const RawBytes&) = delete;
  RawBytes& operator=(const RawBytes&) = delete;
  ~RawBytes() { unmap(); }
  void resize(size_t n);
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  void unmap();
  void swap(RawBytes& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(capacity_, o.capacity_);
  }
  uint8_t* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

// Sent with every count so that ranks that disagree on the shapes fail instead of
// misreading each other's rows.
struct StageFingerprint {
  int64_t hidden;
  int64_t num_experts;
  int64_t row_bytes;
};

// Sends send_counts[p] to each p in peers and returns the counts received (index = rank;
// entries outside peers are 0). Throws InvalidArgument when a peer's fingerprint differs.
std::vector<int64_t> exchange_counts(PeerExchange& ex, const std::vector<int>& peers,
                                     const std::vector<int64_t>& send_counts, const StageFingerprint& fp, int tag,
                                     TrafficStats& stats);

// The rows a stage received: pointers in arrival order (by source rank ascending, then
// the order the source sent them) and the count from each rank.
// Rows read in place from a RowWindow (window_peers) stay the senders' until release_window().
class RowWindow;
struct Arrival {
  RawBytes buf;
  std::vector<const uint8_t*> rows;
  std::vector<int64_t> counts;  // [R]
  std::vector<int> window_peers;
  int window_stage = 0;
  uint32_t window_seq = 0;
  int64_t size() const { return static_cast<int64_t>(rows.size()); }
  const uint8_t* row(int64_t a) const { return rows[a]; }
};

// Hands the window rows of `arrival` back to their senders (no-op without window rows).
void release_window(RowWindow* win, Arrival& arrival);

// Row exchange with the counts in the message: each peer in `peers` gets one message
// [32-byte header {int64 rows, hidden, experts, row_bytes}][rows] (header only when empty),
// and each peer's message is received into a region sized for max_rows_per_peer rows (a
// receive is an upper bound), so a stage is one round trip. write_row(index, dst) writes
// source row `index` (row_bytes) into dst. Throws InvalidArgument when a peer's header
// disagrees with fp (hidden, experts, row size) or announces more than max_rows_per_peer.
// self_src (optional): source row i already exists at self_src[i] in wire format; this
// rank's own rows are then not copied: arrival points at them (they must outlive arrival's
// use; the two-hop forwarder keeps its stage-A rows this way).
// win (optional): peers it reaches get their rows written straight into their window (stage
// `stage`, call `seq`) and this rank reads theirs in place (arrival.window_peers; the caller
// calls release_window() when done with the rows); the other peers use messages.
template <class WriteRow>
void exchange_rows(PeerExchange& ex, size_t row_bytes, const std::vector<std::vector<int32_t>>& send,
                   const std::vector<int>& peers, int64_t max_rows_per_peer, const StageFingerprint& fp,
                   WriteRow write_row, Arrival& arrival, std::vector<RawBytes>& packed, int tag, TrafficStats& stats,
                   const std::vector<const uint8_t*>* self_src = nullptr, RowWindow* win = nullptr, int stage = 0,
                   uint32_t seq = 0);

// Reverse of a row exchange, in three steps so that the caller can compute while rows
// travel. rows_back holds one row (width elements of dtype) per arrival row of the forward
// stage, in arrival order (blocks by peer ascending, block_offsets()); each block goes back
// to the peer it came from. Output row d (d < num_out) = the sum, in FP32 starting from 0,
// of the rows returned for it: peer p = 0, 1, ..., R-1 in that order (p's i-th returned row
// belongs to d = send[p][i]), written as out_dtype (kFloat32 or kBfloat16). Each sum is
// formed in place (FP32 output; rows must be 4-byte aligned) or in a one-row FP32 scratch
// and stored at once (BF16; no [num_out x width] FP32 array).
//   ReduceBack rb(...)  posts: sends every other peer's block (they must be written) and
//                       posts the receives; this rank's own block may be written later;
//   rb.wait(num_out)    waits for the returned rows (the own block must be complete) and
//                       builds the gather lists;
//   rb.reduce(d0, d1, out, out_dtype)  sums output rows [d0, d1).
// rows_back, send, recv and returned must outlive the object; one ReduceBack at a time per
// exchange. timer gets "exchange <stage>" (post to end of wait) and "reduce <stage>".
// win (optional): for the peers window_reaches() (row width x dtype), the caller has already
// written the peer's block into the peer's window (RowWindow::claim of stage `stage`, call
// seq) instead of rows_back; the constructor publishes it, and the rows returned by such
// peers are read in place from this rank's window and released when the object is destroyed.
class ReduceBack {
 public:
  ReduceBack(PeerExchange& ex, const uint8_t* rows_back, comm::DataType dtype, int64_t width,
             const std::vector<std::vector<int32_t>>& send, const std::vector<int64_t>& recv,
             std::vector<RawBytes>& returned, int tag, TrafficStats& stats, RowWindow* win = nullptr,
             int stage = 0, uint32_t seq = 0);
  ~ReduceBack();
  ReduceBack(const ReduceBack&) = delete;
  ReduceBack& operator=(const ReduceBack&) = delete;
  void wait(int64_t num_out, PhaseTimer& timer, const char* stage);
  void reduce(int64_t d0, int64_t d1, uint8_t* out, comm::DataType out_dtype, PhaseTimer& timer, const char* stage);

 private:
  PeerExchange& ex_;
  const uint8_t* rows_back_;
  comm::DataType dtype_;
  int64_t width_;
  const std::vector<std::vector<int32_t>>& send_;
  const std::vector<int64_t>& recv_;
  std::vector<RawBytes>& returned_;
  std::unique_ptr<PendingExchange> pending_;
  RowWindow* win_;
  int stage_;
  uint32_t seq_;
  std::vector<const uint8_t*> window_rows_;  // [R] rows returned in place through the window, or null
  std::vector<int> window_read_;             // peers whose window rows this object reads
  std::vector<int64_t> first_;       // [num_out + 1] gather list offsets
  std::vector<const uint8_t*> src_;  // returned rows per output row, peers ascending
  std::vector<float> acc_;           // one row
};

// Start of each peer's block in a stage's arrival order: [R + 1] prefix sums of counts.
std::vector<int64_t> block_offsets(const std::vector<int64_t>& counts);

// ---- implementation of the template ----

constexpr size_t kRowHeaderBytes = 4 * sizeof(int64_t);

// Posts the packed messages to msg_peers and receives theirs; returns the pending exchange
// (region_of[p] gets each message peer's receive region in arrival.buf).
std::unique_ptr<PendingExchange> post_rows(PeerExchange& ex, size_t row_bytes,
                                           const std::vector<std::vector<int32_t>>& send,
                                           const std::vector<int>& msg_peers, int64_t max_rows_per_peer,
                                           size_t self_bytes, std::vector<RawBytes>& packed, Arrival& arrival,
                                           std::vector<uint8_t*>& region_of, int tag, TrafficStats& stats);
// Waits for the messages and the window rows and fills arrival (rows and counts) in peer
// order. This rank's own rows are the first send[me].size() rows of arrival.buf, or
// self_src[send[me][i]].
void finish_rows(PeerExchange& ex, size_t row_bytes, const std::vector<std::vector<int32_t>>& send,
                 int64_t max_rows_per_peer, const StageFingerprint& fp, PendingExchange* pending,
                 const std::vector<uint8_t*>& region_of, Arrival& arrival, const std::vector<const uint8_t*>* self_src,
                 RowWindow* win, int stage, uint32_t seq);
// RowWindow calls used by the template (row_window.h has the class).
uint8_t* window_claim(RowWindow* win, int peer, int stage, uint32_t seq);
void window_publish(RowWindow* win, int peer, int stage, uint32_t seq, int64_t rows, const StageFingerprint& fp);
bool window_reaches(RowWindow* win, int stage, int peer, size_t row_bytes);

template <class WriteRow>
void exchange_rows(PeerExchange& ex, size_t row_bytes, const std::vector<std::vector<int32_t>>& send,
                   const std::vector<int>& peers, int64_t max_rows_per_peer, const StageFingerprint& fp,
                   WriteRow write_row, Arrival& arrival, std::vector<RawBytes>& packed, int tag, TrafficStats& stats,
                   const std::vector<const uint8_t*>* self_src, RowWindow* win, int stage, uint32_t seq) {
  const int R = ex.size(), me = ex.rank();
  packed.resize(R);
  std::vector<int> msg_peers, win_peers;
  for (int p : peers) (window_reaches(win, stage, p, row_bytes) ? win_peers : msg_peers).push_back(p);
  const size_t self_bytes = self_src ? 0 : send[me].size() * row_bytes;
  const size_t region = kRowHeaderBytes + static_cast<size_t>(max_rows_per_peer) * row_bytes;
  arrival.buf.resize(self_bytes + msg_peers.size() * region);
  for (int p : msg_peers) {
    packed[p].resize(kRowHeaderBytes + send[p].size() * row_bytes);
    uint8_t* msg = packed[p].data();
    const int64_t header[4] = {static_cast<int64_t>(send[p].size()), fp.hidden, fp.num_experts, fp.row_bytes};
    std::memcpy(msg, header, sizeof(header));
    for (size_t i = 0; i < send[p].size(); ++i) write_row(send[p][i], msg + kRowHeaderBytes + i * row_bytes);
  }
  std::vector<uint8_t*> region_of(R, nullptr);
  std::unique_ptr<PendingExchange> pending =
      post_rows(ex, row_bytes, send, msg_peers, max_rows_per_peer, self_bytes, packed, arrival, region_of, tag, stats);
  // While the messages travel: rows straight into the window peers' memory, then our own.
  for (int p : win_peers) {
    uint8_t* dst = window_claim(win, p, stage, seq);
    for (size_t i = 0; i < send[p].size(); ++i) write_row(send[p][i], dst + i * row_bytes);
    window_publish(win, p, stage, seq, static_cast<int64_t>(send[p].size()), fp);
    stats.control_bytes += kRowHeaderBytes;
  }
  if (!self_src)
    for (size_t i = 0; i < send[me].size(); ++i) write_row(send[me][i], arrival.buf.data() + i * row_bytes);
  arrival.window_peers = win_peers;
  arrival.window_stage = stage;
  arrival.window_seq = seq;
  finish_rows(ex, row_bytes, send, max_rows_per_peer, fp, pending.get(), region_of, arrival, self_src, win, stage,
              seq);
}

}  // namespace switchyard::dispatch::detail
